//! What `relapse run` sets up around its runs and leaves after them: the scenarios loaded, the
//! demo launcher, the revert journal and its guardian, the report files (JSON, JUnit, the
//! Markdown summary). Nothing here prints:
//! errors come back to `main.rs`, which prints them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use relapse_core::compare::Comparison;
use relapse_core::report::file::ReportFile;
use relapse_core::report::RunReport;
use relapse_core::scenario::{self, Scenario};
use relapse_demo::Launcher;
use relapse_journal::Journal;

use relapse_core::compare::Series;

use crate::baseline;
use crate::safety::{Guardian, JournalLog};

/// The demo's children are this executable again, as `relapse __demo-child`.
pub fn launcher() -> anyhow::Result<Launcher> {
    let program =
        std::env::current_exe().context("cannot find the relapse executable to start the demo")?;
    Ok(Launcher {
        program,
        args: vec!["__demo-child".into()],
    })
}

/// Loads every file; on any failure, every file's error (each one line, `file:line:column: …`).
pub fn load_all(files: &[PathBuf], allow_targets: &[String]) -> Result<Vec<Scenario>, Vec<String>> {
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match scenario::load_allowing(file, allow_targets) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(scenarios)
    } else {
        Err(errors)
    }
}

/// The journal and its guardian for one `relapse run`, set up before anything is injected.
pub fn start_safety(state_dir: &Path) -> anyhow::Result<(JournalLog, Guardian)> {
    let context = || {
        format!(
            "cannot create the revert journal under {} (set --state-dir or RELAPSE_STATE_DIR)",
            state_dir.display()
        )
    };
    let dir = Journal::next_dir(state_dir).with_context(context)?;
    let program = std::env::current_exe()
        .context("cannot find the relapse executable to start the guardian")?;
    // The guardian first, the run directory second: a relapse killed between the two then
    // leaves nothing behind, since the guardian removes the directory (or finds none) on EOF.
    let guardian = Guardian::spawn(&program, &["__guardian".to_string()], &dir)
        .context("cannot start the guardian process")?;
    let journal = Journal::create_at(&dir).with_context(context)?;
    Ok((JournalLog::new(journal), guardian))
}

/// Where the report files go; `None`: not asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportPaths<'a> {
    pub json: Option<&'a Path>,
    pub junit: Option<&'a Path>,
    /// Appended to, not replaced (see [`crate::export::markdown`]).
    pub markdown: Option<&'a Path>,
    /// Replaced if it exists.
    pub html: Option<&'a Path>,
}

/// Writes the report files that were asked for; with a comparison, its section of the JSON
/// report, its suites of the JUnit one and its table after the Markdown summary.
pub fn write_reports(
    reports: &[RunReport],
    comparison: Option<&Comparison>,
    paths: ReportPaths<'_>,
) -> anyhow::Result<()> {
    let ReportPaths {
        json,
        junit,
        markdown,
        html,
    } = paths;
    if let Some(path) = json {
        let text = ReportFile::with_comparison(reports, comparison).to_json();
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
    }
    if let Some(path) = junit {
        let text =
            crate::junit::to_junit(reports, comparison).context("serialising the JUnit report")?;
        std::fs::write(path, text)
            .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
    }
    if let Some(path) = markdown {
        let context = || format!("appending the Markdown summary to {}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(context)?;
        let mut text = crate::export::markdown::summary(reports);
        if let Some(comparison) = comparison {
            text += &crate::export::markdown::comparison(comparison);
        }
        file.write_all(text.as_bytes()).with_context(context)?;
    }
    if let Some(path) = html {
        std::fs::write(path, crate::render::html::page(reports))
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    Ok(())
}

/// The baselines to compare with, one per scenario, read before anything runs: a missing or
/// unreadable one is invalid input.
pub fn load_baselines(
    location: &baseline::Location,
    scenarios: &[Scenario],
) -> anyhow::Result<Vec<Series>> {
    scenarios
        .iter()
        .map(|s| {
            let path = location.path_for(&s.name);
            baseline::load(&path).with_context(|| {
                format!(
                    "no usable baseline {:?} for scenario {}",
                    location.name(),
                    s.name
                )
            })
        })
        .collect()
}

/// A baseline given as one file holds one scenario only.
pub fn check_baseline_location(
    location: &baseline::Location,
    scenarios: &[Scenario],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !location.is_file() || scenarios.len() <= 1,
        "the baseline {} is one file, for one scenario; give a NAME (no `/`, no .json) for {} scenarios",
        location.name(),
        scenarios.len()
    );
    Ok(())
}

/// Each scenario's series among the runs (`file_of[i]`: the index of `reports[i]`'s scenario).
pub fn series_of_runs(
    scenarios: &[Scenario],
    files: &[PathBuf],
    reports: &[RunReport],
    file_of: &[usize],
) -> anyhow::Result<Vec<Series>> {
    (scenarios.iter().zip(files).enumerate())
        .map(|(i, (scenario, file))| {
            let runs: Vec<&RunReport> = (reports.iter().zip(file_of))
                .filter(|(_, &f)| f == i)
                .map(|(r, _)| r)
                .collect();
            baseline::series_of(scenario, file, &runs)
        })
        .collect()
}

/// Reads JSON reports, in order, into one list of runs. A file that cannot be read or is not a
/// relapse report is an error that names it.
pub fn read_reports(files: &[PathBuf]) -> Result<Vec<RunReport>, String> {
    let mut runs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let file = ReportFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        runs.extend(
            file.to_reports()
                .map_err(|e| format!("{}: {e}", path.display()))?,
        );
    }
    Ok(runs)
}
