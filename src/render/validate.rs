//! `relapse validate`: one line per scenario file that checked out.

use std::path::Path;

use relapse_core::scenario::Scenario;

use super::plural;

/// `ok: FILE (NAME: N probes, N detection sources, N faults)`, without a newline.
pub fn validated(file: &Path, s: &Scenario) -> String {
    format!(
        "ok: {} ({}: {} probe{}, {} detection source{}, {} fault{})",
        file.display(),
        s.name,
        s.probes.len(),
        plural(s.probes.len()),
        s.detectors.len(),
        plural(s.detectors.len()),
        s.faults.len(),
        plural(s.faults.len())
    )
}
