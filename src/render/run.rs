//! A run's reports: the live line while it goes, the summary after it, and the spread over
//! repeated runs.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::engine::Progress;
use relapse_core::gate::Verdict;
use relapse_core::report::{EpisodeReport, RunReport};

use super::{human, optional, plural};

/// The one-line live display while a run is going.
pub fn progress_line(scenario: &str, p: &Progress) -> String {
    format!(
        "{scenario} · {:>7} · {} · SLI {} samples, {} failed · {} fault{} applied{}",
        human(p.elapsed),
        p.phase.as_str(),
        p.sli_samples,
        p.sli_failures,
        p.faults_applied,
        if p.faults_applied == 1 { "" } else { "s" },
        if p.detected { " · detected" } else { "" }
    )
}

/// The summary printed after a run.
pub fn summary(r: &RunReport) -> String {
    let mut out = String::new();
    let mut verdict = r.verdict.as_str().to_uppercase();
    if let Some(expectation) = &r.expectation {
        verdict.push_str(if expectation.met {
            " (as expected)"
        } else {
            " (not as expected)"
        });
    }
    let file = r
        .file
        .as_ref()
        .map(|f| format!(" ({})", f.display()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "relapse · {}{file} · {verdict} in {}",
        r.scenario,
        human(r.duration)
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }

    let _ = writeln!(out, "\n  timeline (since the run started)");
    for t in &r.timeline {
        let _ = writeln!(out, "  {:>9}  {:<18} {}", human(t.at), t.event, t.detail);
    }

    let resolution = resolution_words(r);
    for (i, e) in r.episodes.iter().enumerate() {
        let title = if r.episodes.len() > 1 {
            format!(" — episode {}", i + 1)
        } else {
            String::new()
        };
        let faults: Vec<String> = e
            .faults
            .iter()
            .map(|f| match e.fault_agent(f) {
                Some(p) => format!("{f} (on agent {})", p.agent),
                None => f.clone(),
            })
            .collect();
        let clock = e.clock_uncertainty();
        let sli = match e.probe_agent() {
            Some(p) => format!(", the SLI checked from agent {}", p.agent),
            None => String::new(),
        };
        let resolution = if e.placements.is_empty() {
            resolution.clone()
        } else {
            format!(
                "{resolution}; + the agent clock's ± {} for instants read on an agent",
                human(clock)
            )
        };
        let _ = writeln!(
            out,
            "\n  measured{title}: {}{sli} ({resolution})",
            faults.join(" + "),
        );
        let _ = writeln!(
            out,
            "    time to impact    {:>9}",
            optional(e.time_to_impact)
        );
        let detect_by = match (&e.detected_by, e.detect_resolution) {
            (Some(name), Some(res)) if res.is_zero() => format!("  by {name} (pushed)"),
            (Some(name), Some(res)) => format!("  by {name} (polled every {})", human(res)),
            _ if e.time_to_detect.is_none() => "  not detected".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "    time to detect    {:>9}{detect_by}",
            optional(e.time_to_detect)
        );
        let mitigated_by = match (&r.mitigation, e.time_to_mitigate) {
            (Some(label), Some(_)) => format!("  by {label}"),
            (Some(label), None) => format!("  no {label}"),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "    time to mitigate  {:>9}{mitigated_by}",
            optional(e.time_to_mitigate)
        );
        let recover_detail = match &e.backlog {
            Some(_) => format!(
                "  serving again after {}, backlog drained after {}",
                optional(e.time_to_serve),
                optional(e.time_to_drain)
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "    time to recover   {:>9}{recover_detail}",
            optional(e.time_to_recover)
        );
        if let Some(backlog) = &e.backlog {
            let peak = backlog
                .peak
                .map_or("unreadable".to_string(), |p| format!("{p}"));
            let _ = writeln!(
                out,
                "    backlog           peak {peak}, drained means at or under {}",
                backlog.max
            );
        }
        let mut kinds: Vec<String> = e
            .failure_statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        kinds.extend(e.failure_errors.iter().map(|(k, n)| format!("{k} ×{n}")));
        let _ = writeln!(
            out,
            "    errors            {} of {} SLI samples ({:.1}%){}",
            e.failures,
            e.samples,
            e.error_ratio() * 100.0,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(": {}", kinds.join(", "))
            }
        );
    }

    if !r.gates.is_empty() {
        let _ = writeln!(out, "\n  gates");
        for g in &r.gates {
            let mark = if g.passed { "ok  " } else { "FAIL" };
            let expected = r
                .expectation
                .as_ref()
                .is_some_and(|e| e.failed_as_expected.contains(&g.name));
            let note = if expected { " (expected to fail)" } else { "" };
            let _ = writeln!(out, "    {mark} {:<24} {}{note}", g.name, g.message);
        }
    }

    let _ = writeln!(out, "\n  probes");
    for p in &r.probes {
        let statuses: Vec<String> = p.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        let _ = writeln!(
            out,
            "    {}{}: {} samples, {} errors, latency p50 {} p90 {} p99 {} max {}{}",
            p.name,
            if p.sli { " (SLI)" } else { "" },
            p.samples,
            p.errors,
            human(p.latency_p50),
            human(p.latency_p90),
            human(p.latency_p99),
            human(p.latency_max),
            if statuses.is_empty() {
                String::new()
            } else {
                format!(", statuses {}", statuses.join(" "))
            }
        );
        let _ = writeln!(
            out,
            "      sent late by p50 {} p99 {} max {}{}",
            human(p.lateness.p50),
            human(p.lateness.p99),
            human(p.lateness.max),
            if p.sli {
                " (the harness's own delay; p99 is in the resolution)"
            } else {
                " (the harness's own delay)"
            }
        );
    }
    out.push_str(&super::flood::floods(&r.floods));
    if !r.processes.is_empty() {
        let _ = writeln!(
            out,
            "\n  processes (output in {})",
            r.run_dir
                .as_ref()
                .map_or(String::from("?"), |d| d.display().to_string())
        );
        for p in &r.processes {
            let log = p
                .log
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned());
            let _ = writeln!(
                out,
                "    {} (pid {}): {}; output {log}",
                p.name, p.pid, p.ended
            );
        }
    }
    let _ = writeln!(out, "\nverdict: {}", r.verdict.as_str());
    if let Some(expectation) = &r.expectation {
        let gates = if expectation.expected.is_empty() {
            String::new()
        } else {
            format!(" ({})", expectation.expected.join(", "))
        };
        let _ = writeln!(out, "expected: fail{gates}: {}", expectation.message);
        let _ = writeln!(out, "outcome: {}", r.outcome().as_str());
    }
    out
}

/// "resolution 104ms: the SLI probe interval 100ms + its p99 lateness 4.3ms": what the stated
/// resolution is made of, so that a harness slowed by its own load shows in it.
fn resolution_words(r: &RunReport) -> String {
    match r.probes.iter().find(|p| p.sli) {
        Some(sli) => format!(
            "resolution {}: the SLI probe interval {} + its p99 lateness {}",
            human(r.resolution),
            human(sli.every),
            human(sli.lateness.p99)
        ),
        None => format!("resolution {}", human(r.resolution)),
    }
}

/// The one line `--quiet` prints per run: the outcome, and with an expectation the verdict
/// and how it compares.
pub fn verdict_line(r: &RunReport) -> String {
    match &r.expectation {
        None => format!("{}: {}", r.scenario, r.verdict.as_str()),
        Some(expectation) => format!(
            "{}: {} (verdict {}; {})",
            r.scenario,
            r.outcome().as_str(),
            r.verdict.as_str(),
            expectation.message
        ),
    }
}

/// Min / median / max of each measured time over repeated runs of the same scenario, one block
/// per scenario name in the order the names first appear, and in it one per episode (the first
/// episode of each run, the second, …). The median of an even count is the mean of the middle
/// two.
pub fn spread(reports: &[RunReport]) -> String {
    let mut out = String::from("\nspread over repeated runs\n");
    let mut names: Vec<&str> = Vec::new();
    for r in reports {
        if !names.contains(&r.scenario.as_str()) {
            names.push(&r.scenario);
        }
    }
    for name in names {
        let runs: Vec<&RunReport> = reports.iter().filter(|r| r.scenario == name).collect();
        let _ = writeln!(
            out,
            "  {name}: {} run{}, {} {}",
            runs.len(),
            plural(runs.len()),
            runs.iter().filter(|r| r.outcome() == Verdict::Pass).count(),
            if runs.iter().any(|r| r.expectation.is_some()) {
                "as expected"
            } else {
                "passed"
            }
        );
        let episodes = runs.iter().map(|r| r.episodes.len()).max().unwrap_or(0);
        for index in 0..episodes.max(1) {
            let of_index: Vec<Option<&EpisodeReport>> =
                runs.iter().map(|r| r.episodes.get(index)).collect();
            if episodes > 1 {
                let faults = of_index
                    .iter()
                    .flatten()
                    .next()
                    .map(|e| e.faults.join(" + "))
                    .unwrap_or_default();
                let _ = writeln!(out, "    episode {}: {faults}", index + 1);
            }
            let indent = if episodes > 1 { "      " } else { "    " };
            spread_rows(&mut out, indent, &runs, &of_index);
        }
    }
    out
}

/// "time to mitigate", with what mitigates where the scenario names it: "(failover)".
fn mitigate_label(mitigation: Option<&str>) -> String {
    match mitigation {
        Some(label) => format!("time to mitigate ({label})"),
        None => "time to mitigate".to_string(),
    }
}

/// One row per measured time over the runs' episodes of one index (`None`: that run had fewer).
fn spread_rows(
    out: &mut String,
    indent: &str,
    runs: &[&RunReport],
    episodes: &[Option<&EpisodeReport>],
) {
    type Pick = fn(&EpisodeReport) -> Option<Duration>;
    let mitigation = runs.iter().find_map(|r| r.mitigation.as_deref());
    let mut metrics: Vec<(String, Pick)> = vec![
        ("time to impact".into(), |e| e.time_to_impact),
        ("time to detect".into(), |e| e.time_to_detect),
        (mitigate_label(mitigation), |e| e.time_to_mitigate),
    ];
    if episodes.iter().flatten().any(|e| e.backlog.is_some()) {
        metrics.push(("time to serve".into(), |e| e.time_to_serve));
        metrics.push(("time to drain".into(), |e| e.time_to_drain));
    }
    metrics.push(("time to recover".into(), |e| e.time_to_recover));
    for (label, pick) in metrics {
        let mut values: Vec<Duration> = episodes.iter().flatten().filter_map(|e| pick(e)).collect();
        values.sort();
        if values.is_empty() {
            let _ = writeln!(out, "{indent}{label:<28} —");
            continue;
        }
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 0 {
            (values[middle - 1] + values[middle]) / 2
        } else {
            values[middle]
        };
        let _ = writeln!(
            out,
            "{indent}{label:<28} min {:>9}  median {:>9}  max {:>9}  ({} of {} run{})",
            human(values[0]),
            human(median),
            human(values[values.len() - 1]),
            values.len(),
            runs.len(),
            plural(runs.len())
        );
    }
}

#[cfg(test)]
mod tests;
