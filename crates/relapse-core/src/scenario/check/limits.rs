//! `[limits]`: how long a run and its parts may take.

use std::time::Duration;

use crate::scenario::file::LimitsSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{Limits, MAX_RUN_CEILING};

pub fn check(section: &LimitsSection) -> Result<Limits, Problem> {
    let limits = Limits {
        max_run: section
            .max_run
            .as_ref()
            .map_or(Duration::from_secs(600), |d| d.get_ref().0),
        observe_after: section
            .observe_after
            .map_or(Duration::from_secs(30), |d| d.0),
        inject_timeout: section
            .inject_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
    };
    if let Some(max_run) = section
        .max_run
        .as_ref()
        .filter(|_| limits.max_run > MAX_RUN_CEILING)
    {
        return problem(
            max_run.span(),
            "max_run is above the ceiling of 1h: expected at most \"1h\"",
        );
    }
    Ok(limits)
}
