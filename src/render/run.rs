//! A run's reports: the live line while it goes, the summary after it, and the spread over
//! repeated runs.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::engine::Progress;
use relapse_core::gate::Verdict;
use relapse_core::report::{EpisodeReport, RunReport};

use super::{human, optional};

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
    let verdict = match r.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "INCONCLUSIVE",
        Verdict::Aborted => "ABORTED",
    };
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

    for (i, e) in r.episodes.iter().enumerate() {
        let title = if r.episodes.len() > 1 {
            format!(" — episode {}", i + 1)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\n  measured{title}: {} (resolution {}, the SLI probe interval)",
            e.faults.join(" + "),
            human(r.resolution)
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
        let _ = writeln!(
            out,
            "    time to mitigate  {:>9}",
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
            let _ = writeln!(out, "    {mark} {:<24} {}", g.name, g.message);
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
    }
    let _ = writeln!(out, "\nverdict: {}", r.verdict.as_str());
    out
}

/// Min / median / max of each measured time over repeated runs of the same scenario, one block
/// per scenario name in the order the names first appear.
pub fn spread(reports: &[RunReport]) -> String {
    let mut out = String::from("\nspread over repeated runs (first episode of each run)\n");
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
            "  {name}: {} runs, {} passed",
            runs.len(),
            runs.iter().filter(|r| r.verdict == Verdict::Pass).count()
        );
        type Pick = fn(&EpisodeReport) -> Option<Duration>;
        let metrics: [(&str, Pick); 4] = [
            ("time to impact", |e| e.time_to_impact),
            ("time to detect", |e| e.time_to_detect),
            ("time to mitigate", |e| e.time_to_mitigate),
            ("time to recover", |e| e.time_to_recover),
        ];
        for (label, pick) in metrics {
            let mut values: Vec<Duration> = runs
                .iter()
                .filter_map(|r| r.headline().and_then(pick))
                .collect();
            values.sort();
            if values.is_empty() {
                let _ = writeln!(out, "    {label:<17} —");
            } else {
                let _ = writeln!(
                    out,
                    "    {label:<17} min {:>9}  median {:>9}  max {:>9}  ({} of {} runs)",
                    human(values[0]),
                    human(values[values.len() / 2]),
                    human(values[values.len() - 1]),
                    values.len(),
                    runs.len()
                );
            }
        }
    }
    out
}
