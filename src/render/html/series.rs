//! Per series (the runs of one scenario): the distribution of each measured time, per episode,
//! as a strip plot: one dot per run (numbered), the median as a labelled tick.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::report::{EpisodeReport, RunReport};

use super::escape;
use super::timeline::nice_step;
use crate::render::human;

type Metric = (&'static str, fn(&EpisodeReport) -> Option<Duration>);

/// The measured times, in the order the design defines them.
const METRICS: [Metric; 6] = [
    ("time to impact", |e| e.time_to_impact),
    ("time to detect", |e| e.time_to_detect),
    ("time to mitigate", |e| e.time_to_mitigate),
    ("time to serve", |e| e.time_to_serve),
    ("time to drain", |e| e.time_to_drain),
    ("time to recover", |e| e.time_to_recover),
];

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 30.0;

/// The series section: one figure per scenario and episode.
pub fn series(reports: &[RunReport]) -> String {
    let mut out = String::new();
    for (scenario, runs) in crate::export::by_scenario(reports) {
        let episodes = runs
            .iter()
            .map(|(_, r)| r.episodes.len())
            .max()
            .unwrap_or(0);
        let _ = write!(
            out,
            r#"<section class="series"><h3>{} — {} run{}</h3>"#,
            escape(scenario),
            runs.len(),
            crate::render::plural(runs.len())
        );
        if episodes == 0 {
            out.push_str("<p>No episode was measured in these runs.</p>");
        }
        for episode in 0..episodes {
            let values: Vec<(&str, Vec<(u32, Duration)>)> = METRICS
                .iter()
                .map(|(name, get)| {
                    let values = runs
                        .iter()
                        .filter_map(|(number, r)| {
                            r.episodes.get(episode).and_then(get).map(|d| (*number, d))
                        })
                        .collect();
                    (*name, values)
                })
                .filter(|(_, values): &(&str, Vec<_>)| !values.is_empty())
                .collect();
            let faults = runs
                .iter()
                .find_map(|(_, r)| r.episodes.get(episode))
                .map(|e| e.faults.join(" + "))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<h4>Episode {} ({})</h4>",
                episode + 1,
                escape(&faults)
            );
            out.push_str(&strip_plot(&values, runs.len()));
        }
        out.push_str("</section>");
    }
    out
}

fn strip_plot(rows: &[(&str, Vec<(u32, Duration)>)], runs: usize) -> String {
    if rows.is_empty() {
        return "<p>Nothing was measured in this episode.</p>".into();
    }
    let longest = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, d)| d.as_secs_f64()))
        .fold(0.0, f64::max)
        .max(0.001);
    let step = nice_step(longest / 6.0);
    let end = (longest / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |secs: f64| LEFT + plot_w * secs / end;
    let height = ROW * rows.len() as f64 + 50.0;
    let mut svg = format!(
        r#"<svg class="distribution" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="distribution of the measured times">"#
    );
    for (index, (name, values)) in rows.iter().enumerate() {
        let y = 24.0 + ROW * index as f64;
        let _ = write!(
            svg,
            r##"<g class="strip" data-metric="{name}"><text class="tick" x="4" y="{ty:.1}">{name} ({n}/{runs})</text><line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            ty = y + 4.0,
            n = values.len(),
            x2 = WIDTH - RIGHT,
        );
        for (number, d) in values {
            let _ = write!(
                svg,
                r##"<circle class="run-dot" cx="{cx:.1}" cy="{y:.1}" r="5" fill="#1f5fa8" fill-opacity="0.35" stroke="#000"><title>run {number}: {h}</title></circle>"##,
                cx = x(d.as_secs_f64()),
                h = human(*d),
            );
        }
        let mut sorted: Vec<Duration> = values.iter().map(|(_, d)| *d).collect();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let mx = x(median.as_secs_f64());
        let _ = write!(
            svg,
            r##"<line class="median" x1="{mx:.1}" x2="{mx:.1}" y1="{a:.1}" y2="{b:.1}" stroke="#b00020" stroke-width="2"/><text class="tick" x="{mx:.1}" y="{ly:.1}" text-anchor="middle">median {h}</text></g>"##,
            a = y - 9.0,
            b = y + 9.0,
            ly = y - 10.0,
            h = human(median),
        );
    }
    let axis_y = 24.0 + ROW * rows.len() as f64;
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" x2="{x2}" y1="{axis_y:.1}" y2="{axis_y:.1}" stroke="#000"/>"##,
        x2 = WIDTH - RIGHT
    );
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let _ = write!(
            svg,
            r#"<text class="tick" x="{tx:.1}" y="{ty:.1}" text-anchor="middle">{label}</text>"#,
            tx = x(t),
            ty = axis_y + 16.0,
            label = human(Duration::from_secs_f64(t)),
        );
        t += step;
    }
    svg.push_str("</svg>");
    svg
}
