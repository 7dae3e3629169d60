//! `[gates]`: the bounds a run must meet to pass.

use crate::scenario::file::GatesSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{DetectorSpec, Gates};

pub fn check(section: &GatesSection, detectors: &[DetectorSpec]) -> Result<Gates, Problem> {
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
    };
    if let (Some(gate), true) = (&section.detect_within, detectors.is_empty()) {
        return problem(
            gate.span(),
            "detect_within needs a detection source: expected at least one [[detect]]",
        );
    }
    Ok(gates)
}
