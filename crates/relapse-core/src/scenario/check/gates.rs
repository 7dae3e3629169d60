//! `[gates]`, and a fault's own `gates`: the bounds a run must meet to pass.

use toml::Spanned;

use crate::scenario::fault::FaultSection;
use crate::scenario::file::GatesSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{DetectorSpec, FaultSpec, Gates};

/// `has_http_flood`: the scenario has a request flood, whose figures the flood gates judge.
pub fn check(
    section: &GatesSection,
    detectors: &[DetectorSpec],
    has_http_flood: bool,
) -> Result<Gates, Problem> {
    let gates = Gates {
        detect_within: section.detect_within.as_ref().map(|d| d.get_ref().0),
        recover_within: section.recover_within.map(|d| d.0),
        mitigate_within: section.mitigate_within.map(|d| d.0),
        max_error_ratio: match &section.max_error_ratio {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
                return problem(r.span(), "max_error_ratio must lie between 0 and 1")
            }
            r => r.as_ref().map(|r| *r.get_ref()),
        },
        allowed_error_statuses: section.allowed_error_statuses.clone(),
        flood_p99_within: section.flood_p99_within.as_ref().map(|d| d.get_ref().0),
        flood_min_delivered: match &section.flood_min_delivered {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
                return problem(r.span(), "flood_min_delivered must lie between 0 and 1")
            }
            r => r.as_ref().map(|r| *r.get_ref()),
        },
    };
    if let (Some(gate), true) = (&section.detect_within, detectors.is_empty()) {
        return problem(
            gate.span(),
            "detect_within needs a detection source: expected at least one [[detect]]",
        );
    }
    let flood_gate = [
        (
            "flood_p99_within",
            section.flood_p99_within.as_ref().map(Spanned::span),
        ),
        (
            "flood_min_delivered",
            section.flood_min_delivered.as_ref().map(Spanned::span),
        ),
    ]
    .into_iter()
    .find_map(|(name, span)| Some((name, span?)));
    if let (Some((name, span)), false) = (flood_gate, has_http_flood) {
        return problem(
            span,
            format!("{name} judges a request flood's figures: expected an http_flood fault in the scenario"),
        );
    }
    Ok(gates)
}

/// Faults whose schedules overlap form one episode, judged by one set of gates: two of them must
/// not set the same gate differently. (The schedule is what the file says; an injection that
/// takes long can only make episodes overlap less.)
pub fn overlapping(
    sections: &[Spanned<FaultSection>],
    faults: &[FaultSpec],
) -> Result<(), Problem> {
    for (i, later) in faults.iter().enumerate() {
        for earlier in &faults[..i] {
            let overlap = later.start < earlier.start + earlier.duration
                && earlier.start < later.start + later.duration;
            if !overlap {
                continue;
            }
            let clash = later.gates.set_names().into_iter().find(|name| {
                earlier.gates.set_names().contains(name)
                    && gate_value(&earlier.gates, name) != gate_value(&later.gates, name)
            });
            if let Some(name) = clash {
                let span = sections[i]
                    .get_ref()
                    .gates
                    .as_ref()
                    .map_or(sections[i].span(), Spanned::span);
                return problem(
                    span,
                    format!(
                        "fault \"{}\" sets `{name}` for its episode, and so does fault \"{}\", which overlaps it: expected the gate in one of them, or the same value",
                        later.name, earlier.name
                    ),
                );
            }
        }
    }
    Ok(())
}

/// One gate's value, comparable.
fn gate_value(gates: &Gates, name: &str) -> String {
    match name {
        "detect_within" => format!("{:?}", gates.detect_within),
        "recover_within" => format!("{:?}", gates.recover_within),
        "mitigate_within" => format!("{:?}", gates.mitigate_within),
        "max_error_ratio" => format!("{:?}", gates.max_error_ratio),
        "flood_p99_within" => format!("{:?}", gates.flood_p99_within),
        "flood_min_delivered" => format!("{:?}", gates.flood_min_delivered),
        _ => format!("{:?}", gates.allowed_error_statuses),
    }
}
