//! Reports for other programs and CI pages: the Prometheus text exposition of the runs and its
//! push to a Pushgateway (`--pushgateway`), and the Markdown summary table (`--markdown`).
//! Nothing here prints: the texts and errors go back to `main.rs`.

pub mod markdown;
pub mod prometheus;
pub mod pushgateway;

use relapse_core::report::RunReport;

/// Each run with its number among the runs of the same scenario, from 1: `--repeat 3` gives a
/// scenario runs 1, 2 and 3, and a scenario named twice on the command line continues counting.
pub fn numbered(reports: &[RunReport]) -> Vec<(u32, &RunReport)> {
    let mut numbered: Vec<(u32, &RunReport)> = Vec::with_capacity(reports.len());
    for report in reports {
        let earlier = numbered
            .iter()
            .filter(|(_, r)| r.scenario == report.scenario)
            .count();
        numbered.push((earlier as u32 + 1, report));
    }
    numbered
}

/// The runs grouped by scenario name, in the order the names first appear, each run numbered
/// as [`numbered`] does.
pub fn by_scenario(reports: &[RunReport]) -> Vec<(&str, Vec<(u32, &RunReport)>)> {
    let mut groups: Vec<(&str, Vec<(u32, &RunReport)>)> = Vec::new();
    for (number, report) in numbered(reports) {
        match groups.iter_mut().find(|(name, _)| *name == report.scenario) {
            Some((_, runs)) => runs.push((number, report)),
            None => groups.push((&report.scenario, vec![(number, report)])),
        }
    }
    groups
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::run;
    use super::*;

    #[test]
    fn runs_are_numbered_within_their_scenario_and_grouped_by_it() {
        let reports = [run("a"), run("b"), run("a"), run("a")];
        let numbers: Vec<(u32, &str)> = numbered(&reports)
            .iter()
            .map(|(n, r)| (*n, r.scenario.as_str()))
            .collect();
        assert_eq!(numbers, [(1, "a"), (1, "b"), (2, "a"), (3, "a")]);
        let groups: Vec<(&str, Vec<u32>)> = by_scenario(&reports)
            .into_iter()
            .map(|(name, runs)| (name, runs.iter().map(|(n, _)| *n).collect()))
            .collect();
        assert_eq!(groups, [("a", vec![1, 2, 3]), ("b", vec![1])]);
    }
}
