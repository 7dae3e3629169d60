//! The terminal report: a person should see at a glance what happened, when, and whether each
//! gate held.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::engine::Progress;
use relapse_core::gate::Verdict;
use relapse_core::report::RunReport;

/// A duration for people: `850ms`, `1.273s`, `2m05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if d.as_secs() < 120 {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn optional(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_string(), human)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_micros(2500)), "2.5ms");
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(1273)), "1.273s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
    }
}
