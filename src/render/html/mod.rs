//! `--html PATH`: one self-contained page to look at a run, or a series of runs: inline SVG and
//! CSS, no script, no font, no image, no URL to fetch. Per run its timeline
//! ([`timeline`]), episodes, gates, error statuses and processes; per series the spread of each
//! measured time ([`series`]).
//!
//! The markup is well-formed XML (every element closed, text escaped), so a test reads it with
//! an XML parser; the layout puts the first run's timeline at [`FIRST_TIMELINE`], so a test of
//! the rendered page knows where to look.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::gate::Verdict;
use relapse_core::report::{EpisodeReport, RunReport};

use crate::render::{human, optional};

mod series;
mod timeline;

pub use timeline::MARK_KINDS;

/// Where the first run's timeline lands in a page rendered 1200 px wide: x, y, width, height in
/// CSS pixels. The header and each run's title have fixed heights to keep it there.
pub const FIRST_TIMELINE: (u32, u32, u32, u32) =
    (PAD, HEADER_H + TITLE_H, timeline::WIDTH, timeline::HEIGHT);
const PAD: u32 = 16;
const HEADER_H: u32 = 64;
const TITLE_H: u32 = 40;

/// The page for these runs (one or more, of one or several scenarios).
pub fn page(reports: &[RunReport]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>relapse report</title><style>");
    out.push_str(&css());
    out.push_str("</style></head><body>");
    let scenarios = crate::export::by_scenario(reports);
    let _ = write!(
        out,
        r##"<header class="page"><h1>relapse report</h1><p>{} run{} of {} scenario{}: {}. <a href="#series">Series</a> below the runs.</p></header>"##,
        reports.len(),
        crate::render::plural(reports.len()),
        scenarios.len(),
        crate::render::plural(scenarios.len()),
        tally(reports),
    );
    for (index, (number, r)) in crate::export::numbered(reports).into_iter().enumerate() {
        run_section(&mut out, index + 1, number, r);
    }
    out.push_str(r#"<section id="series" class="all-series"><h2>Series: the spread of the measured times</h2>"#);
    out.push_str(&series::series(reports));
    out.push_str("</section></body></html>\n");
    out
}

fn tally(reports: &[RunReport]) -> String {
    let count = |v: Verdict| reports.iter().filter(|r| r.outcome() == v).count();
    [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Inconclusive,
        Verdict::Aborted,
    ]
    .into_iter()
    .filter(|v| count(*v) > 0)
    .map(|v| format!("{} {}", count(v), v.as_str()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The outcome as a word and a symbol, never a colour alone.
fn outcome_badge(r: &RunReport) -> String {
    let outcome = r.outcome();
    let symbol = match outcome {
        Verdict::Pass => "✓",
        Verdict::Fail => "✗",
        Verdict::Inconclusive | Verdict::Aborted => "?",
    };
    let expectation = match &r.expectation {
        Some(e) if e.met => " (gates failed as expected)",
        Some(_) => " (not as expected)",
        None => "",
    };
    format!(
        r#"<span class="badge {}">{symbol} {}{expectation}</span>"#,
        outcome.as_str(),
        outcome.as_str().to_uppercase()
    )
}

fn run_section(out: &mut String, index: usize, number: u32, r: &RunReport) {
    let _ = write!(
        out,
        r#"<section class="run" id="run-{index}"><h2 class="run-title">Run {index}: {} #{number} {} <span class="run-id">id {} · started {} · {}</span></h2>"#,
        escape(&r.scenario),
        outcome_badge(r),
        escape(&r.run_id),
        humantime::format_rfc3339_seconds(r.started),
        human(r.duration),
    );
    out.push_str(&timeline::timeline(r));
    out.push_str(LEGEND);
    if let Some(reason) = &r.reason {
        let _ = write!(out, r#"<p class="reason">Why: {}</p>"#, escape(reason));
    }
    episodes_table(out, r);
    gates(out, r);
    errors(out, r);
    processes(out, r);
    out.push_str("</section>");
}

const LEGEND: &str = r#"<p class="legend">Faults: a box over their span. Steady: a striped box, the steady window (W) before injection, at mitigation and at recovery. Latency: a blue stroke per column of samples (log scale); a red × is a failed sample, also cross-hatched in the “failed” band. Marks: I△ impact, D◇ detection, M□ mitigation, R○ recovery, with the episode number; the grey bar left of a mark is the interval the true instant lies in (the probe interval; for detection the source's polling interval).</p>"#;

fn episodes_table(out: &mut String, r: &RunReport) {
    if r.episodes.is_empty() {
        out.push_str("<p>No episode: nothing was injected.</p>");
        return;
    }
    out.push_str("<table class=\"episodes\"><thead><tr><th>Episode</th><th>Faults</th><th>Injected</th><th>Reverted</th><th>TTI</th><th>TTD</th><th>TTM</th><th>TTS</th><th>Drain</th><th>TTR</th><th>Failed samples</th></tr></thead><tbody>");
    for (number, e) in r.episodes.iter().enumerate() {
        let within = |d: Option<Duration>, res: Option<Duration>| match (d, res) {
            (Some(d), Some(res)) => format!("{} (±{})", human(d), human(res)),
            (d, _) => optional(d),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td></tr>",
            number + 1,
            escape(&e.faults.join(" + ")),
            human(e.injected_at),
            optional(e.reverted_at),
            within(e.time_to_impact, Some(r.resolution)),
            detected(e),
            within(e.time_to_mitigate, Some(r.resolution)),
            within(e.time_to_serve, Some(r.resolution)),
            optional(e.time_to_drain),
            optional(e.time_to_recover),
            e.failures,
            e.samples,
        );
    }
    out.push_str("</tbody></table>");
}

fn detected(e: &EpisodeReport) -> String {
    match (e.time_to_detect, &e.detected_by) {
        (Some(t), Some(by)) => format!(
            "{} by {}{}",
            human(t),
            escape(by),
            e.detect_resolution
                .filter(|r| !r.is_zero())
                .map_or(String::new(), |r| format!(" (±{})", human(r)))
        ),
        (t, _) => optional(t),
    }
}

fn gates(out: &mut String, r: &RunReport) {
    if r.gates.is_empty() {
        out.push_str("<p>No gate was judged.</p>");
        return;
    }
    out.push_str("<ul class=\"gates\">");
    for g in &r.gates {
        let (class, word) = if g.passed {
            ("passed", "✓ passed")
        } else {
            ("failed", "✗ FAILED")
        };
        let _ = write!(
            out,
            r#"<li class="gate {class}"><b>{word}</b> {}: {}</li>"#,
            escape(&g.name),
            escape(&g.message)
        );
    }
    out.push_str("</ul>");
}

fn errors(out: &mut String, r: &RunReport) {
    let mut seen: Vec<String> = Vec::new();
    for (number, e) in r.episodes.iter().enumerate() {
        for (status, count) in &e.failure_statuses {
            seen.push(format!("episode {}: status {status} ×{count}", number + 1));
        }
        for (error, count) in &e.failure_errors {
            seen.push(format!(
                "episode {}: {} ×{count}",
                number + 1,
                escape(error)
            ));
        }
    }
    for p in &r.probes {
        let statuses: Vec<String> = p
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        if !statuses.is_empty() {
            seen.push(format!(
                "probe {} (whole run): statuses {}",
                escape(&p.name),
                statuses.join(", ")
            ));
        }
    }
    if seen.is_empty() {
        out.push_str("<p>No failed sample.</p>");
        return;
    }
    out.push_str("<h3>Errors and statuses seen</h3><ul class=\"errors\">");
    for line in seen {
        let _ = write!(out, "<li>{line}</li>");
    }
    out.push_str("</ul>");
}

fn processes(out: &mut String, r: &RunReport) {
    if r.processes.is_empty() {
        return;
    }
    out.push_str("<h3>Processes</h3><table class=\"processes\"><thead><tr><th>Name</th><th>Pid</th><th>How it ended</th><th>Log</th></tr></thead><tbody>");
    for p in &r.processes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&p.name),
            p.pid,
            escape(&p.ended),
            escape(&p.log.display().to_string())
        );
    }
    out.push_str("</tbody></table>");
}

fn css() -> String {
    format!(
        r#"body{{margin:0;font:14px/1.4 sans-serif;color:#111;background:#fff}}
header.page{{margin:0;padding:8px {PAD}px;height:{HEADER_H}px;box-sizing:border-box;overflow:hidden;border-bottom:1px solid #ccc}}
header.page h1{{margin:0;font-size:20px}} header.page p{{margin:0}}
section.run{{margin:0 0 24px;padding:0 {PAD}px}}
h2.run-title{{margin:0;height:{TITLE_H}px;line-height:{TITLE_H}px;overflow:hidden;white-space:nowrap;font-size:16px}}
.run-id{{font-weight:normal;color:#555;font-size:12px}}
svg{{display:block}} svg text{{font:11px sans-serif}} .mark-letter{{font-weight:bold;font-size:9px}}
.band-label{{fill:#333}} .tick{{fill:#333;font-size:10px}}
.badge{{border:1px solid #000;padding:0 4px;font-size:13px}}
.badge.pass{{background:#dff0d8}} .badge.fail{{background:#f8d7da}} .badge.inconclusive,.badge.aborted{{background:#fff3cd}}
.legend{{font-size:12px;color:#333;max-width:1000px}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #999;padding:2px 6px;text-align:left;font-size:13px}}
.gate.failed{{color:#8b0000}} .gate.passed{{color:#1d5c1d}}
section.all-series{{padding:0 {PAD}px;border-top:2px solid #000}}
@media print{{body{{font-size:10pt}} section.run,section.series{{break-inside:avoid;page-break-inside:avoid}} .badge{{background:none!important}} header.page{{height:auto}}}}"#
    )
}

/// Text made safe for XML and HTML alike, in content and in attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
