//! `[[fs_gate]]`: FUSE passthroughs relapse mounts for the run, for `fs_gate` faults to switch.

use super::{made_name, Env};
use crate::scenario::file::FsGateSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{FsGateSpec, Vars};

pub fn check(sections: &[FsGateSection], env: &Env) -> Result<Vec<FsGateSpec>, Problem> {
    let mut gates: Vec<FsGateSpec> = Vec::new();
    for section in sections {
        let name = made_name(
            &section.name,
            "fs_gate",
            gates.iter().map(|g| g.name.clone()),
        )?;
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
