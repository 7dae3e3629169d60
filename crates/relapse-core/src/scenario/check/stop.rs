//! `[[stop]]`: when to abort a run because the target is hurt beyond what it may cost.

use super::quoted_list;
use crate::scenario::file::StopSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{ProbeSpec, SteadyStateSpec, StopSpec};

pub fn check(
    sections: &[StopSection],
    probes: &[ProbeSpec],
    steady_state: &SteadyStateSpec,
) -> Result<Vec<StopSpec>, Problem> {
    let mut stops = Vec::new();
    for stop in sections {
        let probe = match &stop.probe {
            None => steady_state.probe,
            Some(name) => probes
                .iter()
                .position(|p| &p.name == name.get_ref())
                .ok_or_else(|| Problem {
                    span: name.span(),
                    message: format!(
                        "unknown probe \"{}\": expected one of {}",
                        name.get_ref(),
                        quoted_list(probes.iter().map(|p| p.name.as_str()))
                    ),
                })?,
        };
        let min_success = *stop.min_success.get_ref();
        if !(0.0..=1.0).contains(&min_success) {
            return problem(
                stop.min_success.span(),
                "min_success must lie between 0 and 1",
            );
        }
        if stop.window.0 < probes[probe].every {
            return problem(
                stop.name.span(),
                "a stop condition's `for` must be at least one probe interval",
            );
        }
        stops.push(StopSpec {
            name: stop.name.get_ref().clone(),
            probe,
            min_success,
            window: stop.window.0,
        });
    }
    Ok(stops)
}
