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
use super::file::{Dur, GatesSection, OnAgents};
use super::load::{problem, Problem};
use super::{AgentSpec, DetectorSpec, FaultSpec, OnAgent};

/// What a fault (or probe) that runs on an agent needs from the rest of the file: the agents,
/// and the document's `[[fault]]` (or `[[probe]]`) tables as TOML values, from which its kind's
/// table is sent on.
#[derive(Default)]
pub struct Remote<'a> {
    pub agents: &'a [AgentSpec],
    pub tables: &'a [toml::Value],
}

/// Generates, from `/// doc` and `module: SectionType => Variant(SpecType)` per kind (and
/// `+ [Type, …]` for more model types of the module to re-export), in the file format's
/// order: the module declarations (each module holds its file-section type, its model type, its
/// `check(&Spanned<SectionType>, &Env) -> Result<SpecType, Problem>` and an `EXAMPLE` table);
/// `FaultSection` (one `Option<Spanned<SectionType>>` field per kind, after `name`, `start`,
/// `duration`, read by serde in the one pass over the file; each kind's doc is its field's, and
/// its key's description in the schema), its `kinds_given` and
/// `check_kind`; the model's `FaultKind` enum (one `Variant(SpecType)` per kind) and its
/// `name()`; `FAULT_KINDS`; and `EXAMPLES`.
macro_rules! fault_kinds {
    ($($(#[doc = $doc:literal])+ $module:ident: $section:ident => $variant:ident($spec:ident) $(+ [$($extra:ident),+])?,)+) => {
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
            /// Names the fault in the report and the journal; unique in the scenario.
            pub name: Spanned<String>,
            /// When the fault is injected, after steady state was confirmed.
            pub start: Dur,
            /// How long it stays applied, from the instant it was effective; more than 0.
            pub duration: Dur,
            /// Gates for the episode this fault belongs to, with the keys of `[gates]`, over them
            /// key by key.
            pub gates: Option<Spanned<GatesSection>>,
            /// The `[[agent]]` that applies the fault on its host, or a list of them over which a
            /// flood is spread; relapse's own host without it.
            pub on: Option<Spanned<OnAgents>>,
            $($(#[doc = $doc])+ pub $module: Option<Spanned<$module::$section>>,)+
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
                    "description": "How long it stays applied, from the instant it was effective; more than 0."
                }).into());
                let gates = generator.subschema_for::<GatesSection>();
                properties.insert("gates".into(), schemars::json_schema!({
                    "allOf": [gates],
                    "description": "Gates for the episode this fault belongs to, with the keys of [gates], over them key by key."
                }).into());
                properties.insert("on".into(), schemars::json_schema!({
                    "oneOf": [
                        { "type": "string" },
                        { "type": "array", "items": { "type": "string" }, "minItems": 1, "uniqueItems": true }
                    ],
                    "description": "The [[agent]] that applies the fault on its host, or a list of them over which an http_flood, slowloris or connection_flood is spread; relapse's own host without it."
                }).into());
                // Each kind's table by reference, with the kind's own description beside it (two
                // kinds may share a table).
                $(
                    let mut kind = generator.subschema_for::<$module::$section>();
                    kind.insert(
                        "description".into(),
                        concat!($($doc),+).trim().into(),
                    );
                    properties.insert(stringify!($module).into(), kind.into());
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
            /// The first kind this table gives, as the file spells it.
            fn kind_key(&self) -> &'static str {
                $(
                    if self.$module.is_some() {
                        return stringify!($module);
                    }
                )+
                unreachable!("exactly one kind was checked before")
            }

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
    /// Stops a process with SIGSTOP and resumes it with SIGCONT: exactly one target of `pid`,
    /// `pidfile`, `demo`, `process`.
    process_freeze: ProcessFreezeSection => ProcessFreeze(ProcessFreezeSpec),
    /// Takes a network namespace's ephemeral ports away from `connect()`: exactly one target of
    /// `netns`, `pid`, `demo`, and a `mode`, reserve, leak or time_wait.
    port_exhaustion: PortExhaustionSection => PortExhaustion(PortExhaustionSpec),
    /// Lowers a process's soft RLIMIT_NOFILE to about what it uses now, so it can open no new
    /// socket or file: exactly one target of `pid`, `pidfile`, `demo`, `process`.
    fd_exhaustion: FdExhaustionSection => FdExhaustion(FdExhaustionSpec),
    /// One session on a real database takes a lock and holds it: exactly one server of
    /// `postgres`, `mysql`; a table, rows or MySQL's global read lock.
    db_lock: DbLockSection => DbLock(DbLockSpec),
    /// Switches a `[[db_proxy]]` of the run out of pass-through: stall, stall_writes, latency,
    /// error, reset or refuse_new.
    db_proxy: DbProxyFaultSection => DbProxy(DbProxyFaultSpec),
    /// A request flood, HTTP/1.1: an open model (`rate`) or a closed one (`connections`), from
    /// loopback source addresses.
    http_flood: HttpFloodSection => HttpFlood(HttpFloodSpec),
    /// Holds connections that send a request line and then one header line every
    /// `header_interval`, never finishing; connections the server closes are reopened.
    slowloris: ConnectionsSection => Slowloris(SlowlorisSpec),
    /// Opens connections and holds them idle.
    connection_flood: ConnectionsSection => ConnectionFlood(ConnectionFloodSpec),
    /// Freezes a file system with FIFREEZE: writes and metadata changes block, reads go on.
    fs_freeze: FsFreezeSection => FsFreeze(FsFreezeSpec),
    /// Switches an `[[fs_gate]]` of the run out of pass-through: stall, latency or error, for
    /// all operations, writes or fsync.
    fs_gate: FsGateFaultSection => FsGate(FsGateFaultSpec) + [FsGateMode, FsScope, FsErrno],
}

/// Every `[[fault]]`: at least one, unique names, a duration, exactly one kind, and its own
/// gates, which faults that overlap on the schedule must not set differently.
pub fn check(
    sections: &[Spanned<FaultSection>],
    env: &Env,
    detectors: &[DetectorSpec],
    remote: &Remote,
) -> Result<Vec<FaultSpec>, Problem> {
    if sections.is_empty() {
        return problem(0..0, "the scenario has no [[fault]]: expected at least one");
    }
    let mut faults = Vec::new();
    let mut fault_names = BTreeSet::new();
    let has_http_flood = sections.iter().any(|s| s.get_ref().http_flood.is_some());
    for (index, spanned) in sections.iter().enumerate() {
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
            Some(gates) => check::gates::check(gates.get_ref(), detectors, has_http_flood)?,
        };
        let (kind, on) = match &fault.on {
            None => (fault.check_kind(env)?, Vec::new()),
            Some(on) => placed(fault, on, index, env, remote)?,
        };
        faults.push(FaultSpec {
            kind,
            name,
            start: fault.start.0,
            duration: fault.duration.0,
            gates,
            on,
        });
    }
    check::gates::overlapping(sections, &faults)?;
    Ok(faults)
}

/// A fault's kind and its agents' tables, for `on`: one agent gets the kind's table as written;
/// a flood spread over several gets one shard's table each (`spread::shard_tables`).
fn placed(
    fault: &FaultSection,
    on: &Spanned<OnAgents>,
    index: usize,
    env: &Env,
    remote: &Remote,
) -> Result<(FaultKind, Vec<OnAgent>), Problem> {
    let name = fault.name.get_ref();
    let what = format!("fault \"{name}\"");
    let names = on.get_ref().names();
    let Some(first) = names.first() else {
        return problem(
            on.span(),
            format!("{what}: `on` lists no agent: expected one [[agent]] name or more"),
        );
    };
    for (i, agent) in names.iter().enumerate() {
        check::agent::named(agent, on.span(), &what, remote.agents)?;
        if names[..i].contains(agent) {
            return problem(
                on.span(),
                format!("{what}: `on` lists agent \"{agent}\" twice: each share of a flood needs an agent of its own"),
            );
        }
    }
    let key = fault.kind_key();
    check::agent::runs_remotely(on.span(), key, name)?;
    if names.len() > 1 && !SPREAD_KINDS.contains(&key) {
        return problem(
            on.span(),
            format!(
                "{what}: a {key} fault runs on one agent: `on` takes a list only for {} (a flood spread over agents)",
                check::quoted_list(SPREAD_KINDS.iter().copied())
            ),
        );
    }
    let kind = fault.check_kind(&check::agent::env(env, first))?;
    let unsendable = || Problem {
        span: on.span(),
        message: format!("{what}: its {key} table cannot be sent to an agent"),
    };
    let value = check::agent::kind_value(remote.tables.get(index), key).ok_or_else(unsendable)?;
    if names.len() == 1 {
        let table = format!("{key} = {value}");
        return Ok((
            kind,
            vec![OnAgent {
                agent: first.clone(),
                table,
            }],
        ));
    }
    let shards = super::spread::shard_tables(&kind, value, names.len()).map_err(|e| Problem {
        span: on.span(),
        message: format!("{what}: {e}"),
    })?;
    let on = names
        .into_iter()
        .zip(shards)
        .map(|(agent, shard)| OnAgent {
            agent,
            table: format!("{key} = {shard}"),
        })
        .collect();
    Ok((kind, on))
}

/// The kinds whose `on` may list several agents, which the flood is spread over.
pub const SPREAD_KINDS: &[&str] = &["http_flood", "slowloris", "connection_flood"];

#[cfg(test)]
mod tests;
