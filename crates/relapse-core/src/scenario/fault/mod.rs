//! `[[fault]]`: each table's name and timing, then its one kind, checked by that kind's module.
//!
//! The kinds are listed once, in the `fault_kinds!` invocation below; that list generates the
//! `FaultSection` serde type (one optional table per kind), the "exactly one kind" check and its
//! message, the dispatch to each kind's check, and `FAULT_KINDS`. A new kind is a new module
//! here (its file-section type and its `check`) and one line in the list; its model is a
//! `FaultKind` variant whose `name()` is the same spelling.

mod connection_flood;
mod db_lock;
mod db_proxy;
mod fd_exhaustion;
mod flood;
mod http_flood;
mod port_exhaustion;
mod process;
mod process_freeze;
mod slowloris;

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use super::check::Env;
use super::file::Dur;
use super::load::{problem, Problem};
use super::{FaultKind, FaultSpec};

/// Generates, from `name: SectionType => check_function` per kind, in the file format's order:
/// `FaultSection` (one `Option<Spanned<SectionType>>` field per kind, after `name`, `start`,
/// `duration`, read by serde in the one pass over the file), `FaultSection::kinds_given`,
/// `FaultSection::check_kind` (calls `check_function(&Spanned<SectionType>, &Env)` of the one
/// kind given) and `FAULT_KINDS`.
macro_rules! fault_kinds {
    ($($name:ident: $section:ty => $check:path,)+) => {
        /// One `[[fault]]` table as serde reads it.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FaultSection {
            pub name: Spanned<String>,
            pub start: Dur,
            pub duration: Dur,
            $(pub $name: Option<Spanned<$section>>,)+
        }

        /// The names of the fault kinds, as the file spells them (and `FaultKind::name()`
        /// returns them), in the order the file format lists them.
        pub const FAULT_KINDS: &[&str] = &[$(stringify!($name)),+];

        impl FaultSection {
            /// How many kinds this table gives; exactly one is valid.
            fn kinds_given(&self) -> usize {
                0 $(+ usize::from(self.$name.is_some()))+
            }

            /// The model of the kind given, checked by its module.
            fn check_kind(&self, env: &Env) -> Result<FaultKind, Problem> {
                $(
                    if let Some(section) = &self.$name {
                        return $check(section, env);
                    }
                )+
                unreachable!("exactly one kind was checked before")
            }
        }
    };
}

fault_kinds! {
    process_freeze: process_freeze::ProcessFreezeSection => process_freeze::check,
    port_exhaustion: port_exhaustion::PortExhaustionSection => port_exhaustion::check,
    fd_exhaustion: fd_exhaustion::FdExhaustionSection => fd_exhaustion::check,
    db_lock: db_lock::DbLockSection => db_lock::check,
    db_proxy: db_proxy::DbProxyFaultSection => db_proxy::check,
    http_flood: http_flood::HttpFloodSection => http_flood::check,
    slowloris: slowloris::ConnectionsSection => slowloris::check,
    connection_flood: connection_flood::ConnectionsSection => connection_flood::check,
}

/// Every `[[fault]]`: at least one, unique names, a duration, exactly one kind.
pub fn check(sections: &[Spanned<FaultSection>], env: &Env) -> Result<Vec<FaultSpec>, Problem> {
    if sections.is_empty() {
        return problem(0..0, "the scenario has no [[fault]]: expected at least one");
    }
    let mut faults = Vec::new();
    let mut fault_names = BTreeSet::new();
    for spanned in sections {
        let fault = spanned.get_ref();
        let name = fault.name.get_ref().clone();
        if !fault_names.insert(name.clone()) {
            return problem(
                fault.name.span(),
                format!("duplicate fault name \"{name}\""),
            );
        }
        if fault.duration.0.is_zero() {
            return problem(
                spanned.span(),
                format!("fault \"{name}\": duration must be more than 0ms"),
            );
        }
        if fault.kinds_given() != 1 {
            let kinds: Vec<String> = FAULT_KINDS.iter().map(|k| format!("`{k}`")).collect();
            return problem(
                fault.name.span(),
                format!(
                    "fault \"{name}\" needs exactly one kind: expected one of {}",
                    kinds.join(", ")
                ),
            );
        }
        faults.push(FaultSpec {
            kind: fault.check_kind(env)?,
            name,
            start: fault.start.0,
            duration: fault.duration.0,
        });
    }
    Ok(faults)
}

#[cfg(test)]
mod tests;
