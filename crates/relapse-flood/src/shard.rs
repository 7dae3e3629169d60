//! A flood spread over agents: a shard's [`LoadReport`] as the figures that travel back
//! (`relapse_core::report::FloodFigures`: its counts, its latency histogram as HdrHistogram V2),
//! and the merged figures as a report of the whole flood. Each shard's part of the whole is
//! `relapse_core::scenario::spread`'s.

use relapse_core::report::{FiguresError, FloodFigures};

use crate::load::LoadReport;

/// What a shard sends back of its report. Per-source figures stay with the shard.
pub fn figures(report: &LoadReport) -> FloodFigures {
    FloodFigures {
        sent: report.sent,
        completed: report.completed,
        errors_by_kind: report.errors_by_kind.clone(),
        statuses: report.statuses.clone(),
        duration: report.duration,
        intended_rate: report.intended_rate,
        intended: report.intended,
        latency: report.latency.clone(),
    }
}

/// The figures as a load report, for the standalone flood's output.
pub fn load_report(figures: &FloodFigures) -> LoadReport {
    LoadReport {
        sent: figures.sent,
        completed: figures.completed,
        errors_by_kind: figures.errors_by_kind.clone(),
        statuses: figures.statuses.clone(),
        duration: figures.duration,
        achieved_rps: figures.achieved_rps(),
        latency: figures.latency.clone(),
        per_source: None,
        intended_rate: figures.intended_rate,
        intended: figures.intended,
    }
}

/// The whole flood from its shards' figures, as one report: counts added, histograms added
/// into one, the duration the longest shard's, the achieved rate every answer over it.
pub fn merge(shards: &[FloodFigures]) -> Result<LoadReport, FiguresError> {
    FloodFigures::merge(shards).map(|whole| load_report(&whole))
}

#[cfg(test)]
mod tests;
