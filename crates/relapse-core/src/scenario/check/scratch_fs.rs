//! `[[scratch_fs]]`: file systems relapse makes for the run, for file-system faults to act on.

use super::made_name;
use crate::scenario::file::ScratchFsSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{ScratchFsSpec, Vars};

const MIB: u64 = 1 << 20;
/// ext4 needs a few MiB of its own; below this a scratch file system holds next to nothing.
const MIN_SIZE: u64 = 16 * MIB;
/// The image is sparse, but a run may fill it: keep it to what a test machine's disk can hold.
const MAX_SIZE: u64 = 4096 * MIB;

pub fn check(sections: &[ScratchFsSection]) -> Result<Vec<ScratchFsSpec>, Problem> {
    let mut specs: Vec<ScratchFsSpec> = Vec::new();
    for section in sections {
        let name = made_name(
            &section.name,
            "scratch_fs",
            specs.iter().map(|s| s.name.clone()),
        )?;
        let size = match &section.size {
            None => 64 * MIB,
            Some(text) => match parse_size(text.get_ref()) {
                Some(size) if (MIN_SIZE..=MAX_SIZE).contains(&size) => size,
                _ => {
                    return problem(
                        text.span(),
                        format!(
                        "invalid scratch_fs size \"{}\": expected 16MiB to 4GiB, e.g. \"64MiB\"",
                        text.get_ref()
                    ),
                    )
                }
            },
        };
        specs.push(ScratchFsSpec { name, size });
    }
    Ok(specs)
}

/// `"64MiB"`, `"1GiB"` in bytes.
fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let factor = match unit {
        "MiB" => MIB,
        "GiB" => 1024 * MIB,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// `{scratch_fs.NAME.path}` for each file system, known once it is mounted.
pub fn variables(specs: &[ScratchFsSpec], vars: &mut Vars) {
    for spec in specs {
        vars.set(&format!("scratch_fs.{}.path", spec.name), "");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_are_mebibytes_or_gibibytes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("64MB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("64"), None);
    }
}
