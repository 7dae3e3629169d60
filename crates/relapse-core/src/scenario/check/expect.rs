//! `[scenario] expect` and `expect_failed`: a scenario that shows a failure mode on purpose says
//! which of its gates must fail.

use crate::scenario::check::quoted_list;
use crate::scenario::file::ScenarioSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{Expectation, FaultSpec, Gates, GATE_NAMES};

pub fn check(
    section: &ScenarioSection,
    gates: &Gates,
    faults: &[FaultSpec],
    has_detectors: bool,
) -> Result<Expectation, Problem> {
    let fails = match &section.expect {
        None => false,
        Some(expect) => match expect.get_ref().as_str() {
            "pass" => false,
            "fail" => true,
            other => {
                return problem(
                    expect.span(),
                    format!("unknown expectation \"{other}\": expected \"pass\" or \"fail\""),
                )
            }
        },
    };
    let Some(listed) = &section.expect_failed else {
        return Ok(if fails {
            Expectation::Fail { gates: Vec::new() }
        } else {
            Expectation::Pass
        });
    };
    if !fails {
        return problem(
            listed.span(),
            "expect_failed names the gates that must fail: expected `expect = \"fail\"` beside it",
        );
    }
    if listed.get_ref().is_empty() {
        return problem(
            listed.span(),
            "expected at least one gate name (without expect_failed, any failed gate is expected)",
        );
    }
    let mut names: Vec<String> = Vec::new();
    for entry in listed.get_ref() {
        let name = entry.get_ref().trim();
        let (gate, episode) = split_episode(name).map_err(|message| Problem {
            span: entry.span(),
            message,
        })?;
        if !GATE_NAMES.contains(&gate) {
            return problem(
                entry.span(),
                format!(
                    "unknown gate \"{gate}\": expected one of {}, optionally with an episode number (\"recover_within[2]\")",
                    quoted_list(GATE_NAMES.iter().copied())
                ),
            );
        }
        if let Some(episode) = episode {
            if episode == 0 || episode > faults.len() {
                let expected = match faults.len() {
                    1 => "expected episode 1 (the scenario has one fault)".to_string(),
                    n => format!("expected a number from 1 to {n} (one episode per fault at most)"),
                };
                return problem(
                    entry.span(),
                    format!("episode {episode} does not exist: {expected}"),
                );
            }
        }
        if !is_judged(gate, gates, faults, has_detectors) {
            let hint = match gate {
                "detected" => {
                    "it is judged only with a [[detect]] and an episode without detect_within"
                }
                "flood_shards" => {
                    "it is judged only for a flood spread over agents (`on` a list of several)"
                }
                _ => "expected it in [gates] or in a fault's gates",
            };
            return problem(
                entry.span(),
                format!("gate \"{gate}\" is not set for any episode, so it cannot fail: {hint}"),
            );
        }
        if names.iter().any(|n| n == name) {
            return problem(entry.span(), format!("gate \"{name}\" is listed twice"));
        }
        names.push(name.to_string());
    }
    Ok(Expectation::Fail { gates: names })
}

/// `recover_within[2]` → (`recover_within`, Some(2)); `recover_within` → (…, None).
fn split_episode(name: &str) -> Result<(&str, Option<usize>), String> {
    let Some((gate, rest)) = name.split_once('[') else {
        return Ok((name, None));
    };
    match rest.strip_suffix(']').and_then(|n| n.parse::<usize>().ok()) {
        Some(episode) => Ok((gate, Some(episode))),
        None => Err(format!(
            "\"{name}\" is not a gate name: expected a name, optionally with an episode number in brackets (\"recover_within[2]\")"
        )),
    }
}

/// Whether some episode is judged by `gate`.
fn is_judged(gate: &str, gates: &Gates, faults: &[FaultSpec], has_detectors: bool) -> bool {
    let per_fault = || faults.iter().map(|f| gates.overlay(&f.gates));
    if gate == "detected" {
        return has_detectors && per_fault().any(|g| g.detect_within.is_none());
    }
    if gate == "flood_shards" {
        // Judged, without being set, for every flood spread over agents.
        return faults.iter().any(|f| f.on.len() > 1);
    }
    per_fault().any(|g| g.set_names().contains(&gate))
}
