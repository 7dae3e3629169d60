//! `[[fs_gate]]`: FUSE passthroughs relapse mounts for the run, for `fs_gate` faults to switch.

use super::Env;
use crate::scenario::file::FsGateSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{FsGateSpec, Vars};

pub fn check(sections: &[FsGateSection], env: &Env) -> Result<Vec<FsGateSpec>, Problem> {
    let mut gates: Vec<FsGateSpec> = Vec::new();
    for section in sections {
        let name = section.name.get_ref().clone();
        // The name becomes part of a directory name and of {fs_gate.NAME.path}.
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return problem(
                section.name.span(),
                format!(
                    "invalid fs_gate name \"{name}\": expected 1 to 32 of a-z, 0-9, `_` or `-`"
                ),
            );
        }
        if gates.iter().any(|g| g.name == name) {
            return problem(
                section.name.span(),
                format!("duplicate fs_gate name \"{name}\""),
            );
        }
        let source = section.source.get_ref();
        if !(source.starts_with('/') || source.starts_with('{')) {
            return problem(
                section.source.span(),
                "expected an absolute directory, e.g. \"{scratch_fs.mail.path}\"",
            );
        }
        gates.push(FsGateSpec {
            name,
            source: env.template(&section.source)?,
        });
    }
    Ok(gates)
}

/// `{fs_gate.NAME.path}` for each gate, known once it is mounted.
pub fn variables(gates: &[FsGateSpec], vars: &mut Vars) {
    for gate in gates {
        vars.set(&format!("fs_gate.{}.path", gate.name), "");
    }
}
