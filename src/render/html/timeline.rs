//! One run's timeline as inline SVG: fault spans, steady windows, the SLI's latency and outcome
//! per sample, and a mark per impact, detection, mitigation and recovery with the interval it
//! could lie in. Every distinction has a shape or a label besides its colour, so it survives
//! print in black and white.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::report::{RunReport, SeriesSample};

use super::escape;
use crate::render::human;

/// The SVG's size in CSS pixels; the page puts it at a known place (see `super::LAYOUT`).
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 300;

const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PLOT_W: f64 = WIDTH as f64 - LEFT - RIGHT;
/// The vertical bands, top to bottom.
const MARK_TOP: f64 = 4.0;
const FAULT_TOP: f64 = 40.0;
const FAULT_ROW: f64 = 14.0;
const STEADY_TOP: f64 = 84.0;
const LATENCY_TOP: f64 = 104.0;
const LATENCY_BOTTOM: f64 = 232.0;
const OUTCOME_TOP: f64 = 238.0;
const OUTCOME_H: f64 = 12.0;
const AXIS_Y: f64 = 256.0;
/// Samples are drawn per column of this many pixels: an hour at 50 ms stays ~900 columns.
const COLUMN: f64 = 1.0;

/// The event kinds marked on a timeline, with the shape that stands for each.
pub const MARK_KINDS: [(&str, &str); 4] = [
    ("impact", "I"),
    ("detection", "D"),
    ("mitigation", "M"),
    ("recovery", "R"),
];

struct Scale {
    end: f64,
}

impl Scale {
    fn x(&self, at: Duration) -> f64 {
        LEFT + PLOT_W * (at.as_secs_f64() / self.end).clamp(0.0, 1.0)
    }
}

/// Latency on a log scale from 0.1 ms to the slowest sample (at least 10 ms).
struct LatencyScale {
    top_ms: f64,
}

impl LatencyScale {
    const FLOOR_MS: f64 = 0.1;

    fn y(&self, latency: Duration) -> f64 {
        let ms = (latency.as_secs_f64() * 1000.0).max(Self::FLOOR_MS);
        let span = (self.top_ms / Self::FLOOR_MS).log10();
        let frac = (ms / Self::FLOOR_MS).log10() / span;
        LATENCY_BOTTOM - (LATENCY_BOTTOM - LATENCY_TOP) * frac.clamp(0.0, 1.0)
    }
}

/// The SVG of one run's timeline.
pub fn timeline(r: &RunReport) -> String {
    let end = r
        .duration
        .max(
            r.sli
                .as_ref()
                .and_then(|s| s.samples.last())
                .map_or(Duration::ZERO, |s| s.at),
        )
        .as_secs_f64()
        .max(0.001);
    let scale = Scale { end };
    let mut svg = String::with_capacity(16 * 1024);
    let _ = write!(
        svg,
        r#"<svg class="timeline" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="timeline of run {}">"#,
        escape(&r.run_id)
    );
    svg.push_str(PATTERNS);
    band_labels(&mut svg);
    faults(&mut svg, r, &scale);
    steady_windows(&mut svg, r, &scale);
    samples(&mut svg, r, &scale);
    marks(&mut svg, r, &scale);
    axis(&mut svg, &scale);
    svg.push_str("</svg>");
    svg
}

/// Hatchings: a failure is dark and cross-hatched, a steady window striped.
const PATTERNS: &str = r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#e8f3e8"/><line x1="0" y1="0" x2="0" y2="6" stroke="#3a7d3a" stroke-width="2"/></pattern><pattern id="cross" width="4" height="4" patternUnits="userSpaceOnUse"><rect width="4" height="4" fill="#b00020"/><path d="M0 0L4 4M4 0L0 4" stroke="#000" stroke-width="0.8"/></pattern></defs>"##;

fn band_labels(svg: &mut String) {
    for (y, label) in [
        (FAULT_TOP + 10.0, "faults"),
        (STEADY_TOP + 10.0, "steady"),
        ((LATENCY_TOP + LATENCY_BOTTOM) / 2.0, "latency"),
        (OUTCOME_TOP + 10.0, "failed"),
    ] {
        let _ = write!(
            svg,
            r#"<text class="band-label" x="4" y="{y:.1}">{label}</text>"#
        );
    }
    let _ = write!(
        svg,
        r##"<rect class="plot-frame" x="{LEFT}" y="{LATENCY_TOP}" width="{PLOT_W}" height="{:.1}" fill="none" stroke="#bbb"/>"##,
        LATENCY_BOTTOM - LATENCY_TOP
    );
}

fn faults(svg: &mut String, r: &RunReport, scale: &Scale) {
    for (number, e) in r.episodes.iter().enumerate() {
        let until = e.reverted_at.unwrap_or(r.duration);
        let x0 = scale.x(e.injected_at);
        let width = (scale.x(until) - x0).max(1.0);
        for (row, fault) in e.faults.iter().enumerate() {
            let y = FAULT_TOP + FAULT_ROW * (row % 3) as f64;
            let _ = write!(
                svg,
                r##"<g class="fault-span" data-fault="{name}" data-episode="{episode}"><rect x="{x0:.1}" y="{y:.1}" width="{width:.1}" height="{h:.1}" fill="#f6c343" stroke="#7a5a00"/><text x="{tx:.1}" y="{ty:.1}" class="fault-label">{name} ({from}–{to})</text></g>"##,
                name = escape(fault),
                episode = number + 1,
                h = FAULT_ROW - 2.0,
                tx = x0 + 3.0,
                ty = y + 10.0,
                from = human(e.injected_at),
                to = e.reverted_at.map_or("end".to_string(), human),
            );
        }
    }
}

fn steady_windows(svg: &mut String, r: &RunReport, scale: &Scale) {
    let w = r.steady_window;
    let mut windows: Vec<(Duration, String)> = Vec::new();
    if let Some(confirmed) = r.steady_confirmed_at {
        windows.push((
            confirmed.saturating_sub(w),
            "steady before injection".into(),
        ));
    }
    for (number, e) in r.episodes.iter().enumerate() {
        if let Some(at) = e.mitigated_at {
            windows.push((at, format!("mitigated (episode {})", number + 1)));
        }
        if let Some(at) = e.recovered_at {
            windows.push((at, format!("recovered (episode {})", number + 1)));
        }
    }
    for (start, label) in windows {
        let x0 = scale.x(start);
        let width = (scale.x(start + w) - x0).max(1.0);
        let _ = write!(
            svg,
            r##"<rect class="steady-window" x="{x0:.1}" y="{STEADY_TOP}" width="{width:.1}" height="14" fill="url(#hatch)" stroke="#3a7d3a"><title>{label}: {from} for {len}</title></rect>"##,
            label = escape(&label),
            from = human(start),
            len = human(w),
        );
    }
}

/// Per column of pixels: the latency range of its samples (a vertical stroke), and, when any
/// failed, a cross-hatched cell in the outcome band and a cross at its latency.
fn samples(svg: &mut String, r: &RunReport, scale: &Scale) {
    let Some(series) = &r.sli else {
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y:.1}" class="empty">no SLI samples in this report</text>"#,
            x = LEFT + 10.0,
            y = (LATENCY_TOP + LATENCY_BOTTOM) / 2.0
        );
        return;
    };
    let slowest = series
        .samples
        .iter()
        .map(|s| s.latency)
        .max()
        .unwrap_or_default();
    let latency = LatencyScale {
        top_ms: (slowest.as_secs_f64() * 1000.0 * 1.2).max(10.0),
    };
    latency_ticks(svg, &latency);
    let columns = (PLOT_W / COLUMN).ceil() as usize + 1;
    let mut cells: Vec<Option<Column>> = vec![None; columns];
    for s in &series.samples {
        let column = (((scale.x(s.at) - LEFT) / COLUMN) as usize).min(columns - 1);
        let cell = cells[column].get_or_insert((s.latency, s.latency, 0, 0, Duration::ZERO));
        cell.0 = cell.0.min(s.latency);
        cell.1 = cell.1.max(s.latency);
        if failed(s) {
            cell.3 += 1;
            cell.4 = cell.4.max(s.latency);
        } else {
            cell.2 += 1;
        }
    }
    let mut ok_path = String::new();
    let mut failed_path = String::new();
    let mut outcome_path = String::new();
    for (column, cell) in cells.iter().enumerate() {
        let Some((low, high, _, failures, slowest_failure)) = cell else {
            continue;
        };
        let x = LEFT + column as f64 * COLUMN + COLUMN / 2.0;
        let (y0, y1) = (latency.y(*low), latency.y(*high));
        let _ = write!(ok_path, "M{x:.1} {:.1}V{:.1}", y0 + 0.8, y1 - 0.8);
        if *failures > 0 {
            let y = latency.y(*slowest_failure);
            let _ = write!(failed_path, "M{:.1} {:.1}l4 4m0 -4l-4 4", x - 2.0, y - 2.0);
            let _ = write!(
                outcome_path,
                "M{:.1} {OUTCOME_TOP}h{COLUMN}v{OUTCOME_H}h-{COLUMN}z",
                x - COLUMN / 2.0
            );
        }
    }
    let _ = write!(
        svg,
        r##"<path class="latency" d="{ok_path}" stroke="#1f5fa8" stroke-width="1.6" fill="none"/>"##
    );
    let _ = write!(
        svg,
        r##"<path class="failure-latency" d="{failed_path}" stroke="#b00020" stroke-width="1.2" fill="none"/>"##
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{OUTCOME_TOP}" width="{PLOT_W}" height="{OUTCOME_H}" fill="none" stroke="#bbb"/><path class="failures" d="{outcome_path}" fill="url(#cross)" stroke="#b00020" stroke-width="0.5"/>"##
    );
}

/// One column's samples: lowest and highest latency, successes, failures, slowest failure.
type Column = (Duration, Duration, u32, u32, Duration);

fn failed(s: &SeriesSample) -> bool {
    s.error.is_some()
}

fn latency_ticks(svg: &mut String, latency: &LatencyScale) {
    let mut ms = 0.1;
    while ms <= latency.top_ms {
        let y = latency.y(Duration::from_secs_f64(ms / 1000.0));
        let label = human(Duration::from_secs_f64(ms / 1000.0));
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            x2 = LEFT + PLOT_W,
            tx = LEFT - 4.0,
            ty = y + 3.0,
        );
        ms *= 10.0;
    }
}

/// One mark per measured event: a vertical line through the plot, its letter in a shape at the
/// top, and a bar over the interval the true instant lies in (the probe interval for impact,
/// mitigation and recovery; the detecting source's polling interval for detection).
fn marks(svg: &mut String, r: &RunReport, scale: &Scale) {
    for (number, e) in r.episodes.iter().enumerate() {
        let events = [
            (0, e.time_to_impact.map(|t| e.injected_at + t), r.resolution),
            (
                1,
                e.time_to_detect.map(|t| e.injected_at + t),
                e.detect_resolution.unwrap_or_default(),
            ),
            (2, e.mitigated_at, r.resolution),
            (
                3,
                e.time_to_serve
                    .zip(e.reverted_at)
                    .map(|(t, reverted)| reverted + t),
                r.resolution,
            ),
        ];
        for (kind, at, resolution) in events {
            let Some(at) = at else { continue };
            let (name, letter) = MARK_KINDS[kind];
            let x = scale.x(at);
            let band_x = scale.x(at.saturating_sub(resolution));
            // Stagger the letters so that marks close in time stay readable.
            let y = MARK_TOP + (kind % 2) as f64 * 16.0;
            let _ = write!(
                svg,
                r##"<g class="mark" data-event="{name}" data-episode="{episode}"><title>{name} (episode {episode}) at {at_h}, within {res}</title><line x1="{x:.1}" x2="{x:.1}" y1="{y1:.1}" y2="{LATENCY_BOTTOM}" stroke="#000" stroke-dasharray="{dash}"/><rect class="resolution" x="{band_x:.1}" y="{by:.1}" width="{bw:.1}" height="4" fill="#555"/>{shape}<text x="{x:.1}" y="{ty:.1}" text-anchor="middle" class="mark-letter">{letter}{episode}</text></g>"##,
                episode = number + 1,
                at_h = human(at),
                res = human(resolution),
                y1 = y + 12.0,
                dash = ["4 2", "1 2", "6 2 1 2", "none"][kind],
                by = y + 12.0,
                bw = (x - band_x).max(1.0),
                shape = shape(kind, x, y + 6.0),
                ty = y + 9.5,
            );
        }
    }
}

/// A distinct outline per kind of mark: triangle, diamond, square, circle.
fn shape(kind: usize, x: f64, y: f64) -> String {
    let style = r##"fill="#fff" stroke="#000""##;
    match kind {
        0 => format!(
            r#"<path d="M{x:.1} {:.1}L{:.1} {:.1}H{:.1}Z" {style}/>"#,
            y - 7.0,
            x + 9.0,
            y + 6.0,
            x - 9.0
        ),
        1 => format!(
            r#"<path d="M{x:.1} {:.1}L{:.1} {y:.1}L{x:.1} {:.1}L{:.1} {y:.1}Z" {style}/>"#,
            y - 7.0,
            x + 9.0,
            y + 7.0,
            x - 9.0
        ),
        2 => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="15" height="13" {style}/>"#,
            x - 7.5,
            y - 6.5
        ),
        _ => format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="7.5" {style}/>"#),
    }
}

fn axis(svg: &mut String, scale: &Scale) {
    let step = nice_step(scale.end / 8.0);
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" x2="{x2}" y1="{AXIS_Y}" y2="{AXIS_Y}" stroke="#000"/>"##,
        x2 = LEFT + PLOT_W
    );
    let mut t = 0.0;
    while t <= scale.end + 1e-9 {
        let x = scale.x(Duration::from_secs_f64(t));
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{AXIS_Y}" y2="{y2}" stroke="#000"/><text class="tick" x="{x:.1}" y="{ty}" text-anchor="middle">{label}</text>"##,
            y2 = AXIS_Y + 4.0,
            ty = AXIS_Y + 16.0,
            label = human(Duration::from_secs_f64(t)),
        );
        t += step;
    }
    let _ = write!(
        svg,
        r#"<text class="tick" x="{x}" y="{y}" text-anchor="end">time since the run's start</text>"#,
        x = LEFT + PLOT_W,
        y = AXIS_Y + 32.0
    );
}

/// 1, 2 or 5 times a power of ten, at least `raw` seconds.
pub(super) fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1e-6).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}
