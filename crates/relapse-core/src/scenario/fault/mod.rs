//! `[[fault]]`: each table's name and timing, then its one kind, checked by that kind's module.
//!
//! The kinds are listed once, in the `fault_kinds!` invocation below; that list generates the
//! `FaultSection` serde type (one optional table per kind), the "exactly one kind" check and its
//! message, the dispatch to each kind's check, the model's `FaultKind` enum and its `name()`,
//! and `FAULT_KINDS`. A new kind is a new module here (its file-section type, its model type,
//! its `check` and an `EXAMPLE`) and one line in the list: two files.

mod flood;
mod process;

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use super::check::{self, Env};
use super::file::{Dur, GatesSection};
use super::load::{problem, Problem};
use super::{DetectorSpec, FaultSpec};

/// Generates, from `module: SectionType => Variant(SpecType)` per kind (and `+ [Type, …]` for
/// more model types of the module to re-export), in the file format's
/// order: the module declarations (each module holds its file-section type, its model type, its
/// `check(&Spanned<SectionType>, &Env) -> Result<SpecType, Problem>` and an `EXAMPLE` table);
/// `FaultSection` (one `Option<Spanned<SectionType>>` field per kind, after `name`, `start`,
/// `duration`, read by serde in the one pass over the file), its `kinds_given` and
/// `check_kind`; the model's `FaultKind` enum (one `Variant(SpecType)` per kind) and its
/// `name()`; `FAULT_KINDS`; and `EXAMPLES`.
macro_rules! fault_kinds {
    ($($module:ident: $section:ident => $variant:ident($spec:ident) $(+ [$($extra:ident),+])?,)+) => {
        $(mod $module;)+

        /// What the scenario module re-exports of the kinds: their models and the list.
        pub mod exports {
            $(pub use super::$module::$spec;)+
            $($($(pub use super::$module::$extra;)+)?)+
            pub use super::{FaultKind, FAULT_KINDS};
        }

        /// One `[[fault]]` table as serde reads it.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FaultSection {
            pub name: Spanned<String>,
            pub start: Dur,
            pub duration: Dur,
            /// Gates for this fault's episode, over `[gates]`.
            pub gates: Option<Spanned<GatesSection>>,
            $(pub $module: Option<Spanned<$module::$section>>,)+
        }

        /// What a fault injects, and into what: one variant per kind, each with its own model.
        #[derive(Debug, Clone, PartialEq)]
        pub enum FaultKind {
            $($variant($module::$spec),)+
        }

        impl FaultKind {
            /// The kind's name as scenarios and the journal spell it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(FaultKind::$variant(_) => stringify!($module),)+
                }
            }
        }

        /// The names of the fault kinds, as the file spells them (and `FaultKind::name()`
        /// returns them), in the order the file format lists them.
        pub const FAULT_KINDS: &[&str] = &[$(stringify!($module)),+];

        /// One small valid table per kind, by name, for tests.
        #[cfg(test)]
        pub(crate) const EXAMPLES: &[(&str, &str)] = &[$((stringify!($module), $module::EXAMPLE)),+];

        /// By hand, since the kinds' tables are `Spanned` (which has no schema): `name`, `start`
        /// and `duration` required, `gates` and one table per kind optional, nothing else. That
        /// exactly one kind is given is the loader's check, which the schema leaves out: an
        /// editor then offers every kind's keys.
        impl schemars::JsonSchema for FaultSection {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                "Fault".into()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut properties = serde_json::Map::new();
                properties.insert(
                    "name".into(),
                    schemars::json_schema!({
                        "type": "string",
                        "description": "Names the fault in the report and the journal; unique in the scenario."
                    }).into(),
                );
                let duration = generator.subschema_for::<Dur>();
                properties.insert("start".into(), schemars::json_schema!({
                    "allOf": [duration.clone()],
                    "description": "When the fault is injected, after steady state was confirmed."
                }).into());
                properties.insert("duration".into(), schemars::json_schema!({
                    "allOf": [duration],
                    "description": "How long it stays applied before it is reverted; more than 0."
                }).into());
                let gates = generator.subschema_for::<GatesSection>();
                properties.insert("gates".into(), schemars::json_schema!({
                    "allOf": [gates],
                    "description": "Gates for this fault's episode, over [gates]."
                }).into());
                $(
                    properties.insert(
                        stringify!($module).into(),
                        generator.subschema_for::<$module::$section>().into(),
                    );
                )+
                schemars::json_schema!({
                    "type": "object",
                    "description": "A fault: its name, its schedule and exactly one kind.",
                    "properties": properties,
                    "required": ["name", "start", "duration"],
                    "additionalProperties": false
                })
            }
        }

        impl FaultSection {
            /// How many kinds this table gives; exactly one is valid.
            fn kinds_given(&self) -> usize {
                0 $(+ usize::from(self.$module.is_some()))+
            }

            /// The model of the kind given, checked by its module.
            fn check_kind(&self, env: &Env) -> Result<FaultKind, Problem> {
                $(
                    if let Some(section) = &self.$module {
                        return $module::check(section, env).map(FaultKind::$variant);
                    }
                )+
                unreachable!("exactly one kind was checked before")
            }
        }
    };
}

fault_kinds! {
    process_freeze: ProcessFreezeSection => ProcessFreeze(ProcessFreezeSpec),
    port_exhaustion: PortExhaustionSection => PortExhaustion(PortExhaustionSpec),
    fd_exhaustion: FdExhaustionSection => FdExhaustion(FdExhaustionSpec),
    db_lock: DbLockSection => DbLock(DbLockSpec),
    db_proxy: DbProxyFaultSection => DbProxy(DbProxyFaultSpec),
    http_flood: HttpFloodSection => HttpFlood(HttpFloodSpec),
    slowloris: ConnectionsSection => Slowloris(SlowlorisSpec),
    connection_flood: ConnectionsSection => ConnectionFlood(ConnectionFloodSpec),
    fs_freeze: FsFreezeSection => FsFreeze(FsFreezeSpec),
    fs_gate: FsGateFaultSection => FsGate(FsGateFaultSpec) + [FsGateMode, FsScope, FsErrno],
}

/// Every `[[fault]]`: at least one, unique names, a duration, exactly one kind, and its own
/// gates, which faults that overlap on the schedule must not set differently.
pub fn check(
    sections: &[Spanned<FaultSection>],
    env: &Env,
    detectors: &[DetectorSpec],
) -> Result<Vec<FaultSpec>, Problem> {
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
        let gates = match &fault.gates {
            None => Default::default(),
            Some(gates) => check::gates::check(gates.get_ref(), detectors)?,
        };
        faults.push(FaultSpec {
            kind: fault.check_kind(env)?,
            name,
            start: fault.start.0,
            duration: fault.duration.0,
            gates,
        });
    }
    check::gates::overlapping(sections, &faults)?;
    Ok(faults)
}

#[cfg(test)]
mod tests;
