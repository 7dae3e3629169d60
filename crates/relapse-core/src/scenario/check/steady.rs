//! `[steady_state]`: what the SLI probe must show before any fault is injected.

use std::time::Duration;

use toml::Spanned;

use super::quoted_list;
use crate::scenario::file::SteadyStateSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{ProbeSpec, SteadyStateSpec};

pub fn check(
    section: Spanned<SteadyStateSection>,
    probes: &[ProbeSpec],
) -> Result<SteadyStateSpec, Problem> {
    let steady_span = section.span();
    let s = section.into_inner();
    let probe = probes
        .iter()
        .position(|p| &p.name == s.probe.get_ref())
        .ok_or_else(|| Problem {
            span: s.probe.span(),
            message: if probes.is_empty() {
                format!(
                    "unknown probe \"{}\": the scenario declares no [[probe]]",
                    s.probe.get_ref()
                )
            } else {
                format!(
                    "unknown probe \"{}\": expected one of {}",
                    s.probe.get_ref(),
                    quoted_list(probes.iter().map(|p| p.name.as_str()))
                )
            },
        })?;
    let min_success = *s.min_success.get_ref();
    if !(0.0..=1.0).contains(&min_success) {
        return problem(s.min_success.span(), "min_success must lie between 0 and 1");
    }
    if s.window.0 < probes[probe].every {
        return problem(
            steady_span,
            "the steady-state window must be at least one probe interval",
        );
    }
    Ok(SteadyStateSpec {
        probe,
        window: s.window.0,
        min_success,
        max_p99: s.max_p99.map(|d| d.0),
        timeout: s.timeout.map_or(Duration::from_secs(30), |d| d.0),
    })
}
