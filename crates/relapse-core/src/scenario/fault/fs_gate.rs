//! `fs_gate`: switch a `[[fs_gate]]` of the run from pass-through to stall, latency or error.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::check::{quoted_list, Env};
use crate::scenario::file::Dur;
use crate::scenario::load::{problem, Problem};

/// `fs_gate`: what the gate does to the operations in `scope` until the revert.
#[derive(Debug, Clone, PartialEq)]
pub struct FsGateFaultSpec {
    /// Index into `Scenario::fs_gates`.
    pub gate: usize,
    pub mode: FsGateMode,
}

/// What an `fs_gate` fault makes the gate do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FsGateMode {
    /// Park the operations until the revert: a hang, not an error.
    Stall { scope: FsScope },
    /// Delay each operation by `latency` ± a uniform `jitter`.
    Latency {
        scope: FsScope,
        latency: Duration,
        jitter: Duration,
    },
    /// Fail each operation with `errno`.
    Error { scope: FsScope, errno: FsErrno },
}

/// Which operations an `fs_gate` mode acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsScope {
    /// Every operation, reads and lookups too.
    All,
    /// What changes the file system: writes, creates, renames, removals, attribute changes,
    /// fsync.
    Writes,
    /// fsync alone.
    Fsync,
}

/// The errors an `fs_gate` fault can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsErrno {
    Eio,
    Enospc,
    Erofs,
}

/// `fs_gate = { gate, mode, scope, … }`: the gate and a mode, with the settings of that mode
/// only.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsGateFaultSection {
    /// The `[[fs_gate]]` to switch, by name; required.
    #[schemars(with = "String")]
    pub gate: Spanned<String>,
    /// `"stall"` (operations are parked, unanswered, until the revert), `"latency"` or
    /// `"error"`; required.
    #[schemars(with = "String", extend("enum" = ["stall", "latency", "error"]))]
    pub mode: Spanned<String>,
    /// The operations it acts on: `"all"` (the default), `"writes"` (writes, creates, renames,
    /// removals, attribute changes, fsync) or `"fsync"`.
    #[schemars(with = "Option<String>", extend("enum" = ["all", "writes", "fsync"]))]
    pub scope: Option<Spanned<String>>,
    /// With mode `"latency"`, required there: how long each operation is delayed; more than 0.
    pub latency: Option<Dur>,
    /// With mode `"latency"`: a uniform jitter, at most `latency`; default 0.
    pub jitter: Option<Dur>,
    /// With mode `"error"`, required there: `"EIO"`, `"ENOSPC"` or `"EROFS"`.
    #[schemars(with = "Option<String>", extend("enum" = ["EIO", "ENOSPC", "EROFS"]))]
    pub error: Option<Spanned<String>>,
}

pub fn check(section: &Spanned<FsGateFaultSection>, env: &Env) -> Result<FsGateFaultSpec, Problem> {
    let span = section.span();
    let g = section.get_ref();
    let Some(gate) = env.fs_gates.iter().position(|s| &s.name == g.gate.get_ref()) else {
        return problem(
            g.gate.span(),
            if env.fs_gates.is_empty() {
                format!(
                    "unknown fs_gate \"{}\": the scenario declares no [[fs_gate]]",
                    g.gate.get_ref()
                )
            } else {
                format!(
                    "unknown fs_gate \"{}\": expected one of {}",
                    g.gate.get_ref(),
                    quoted_list(env.fs_gates.iter().map(|s| s.name.as_str()))
                )
            },
        );
    };
    let scope = match g.scope.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("all", _)) => FsScope::All,
        Some(("writes", _)) => FsScope::Writes,
        Some(("fsync", _)) => FsScope::Fsync,
        Some((other, at)) => {
            return problem(
                at,
                format!("unknown fs_gate scope \"{other}\": expected \"all\", \"writes\" or \"fsync\""),
            )
        }
    };
    let mode_name = g.mode.get_ref().as_str();
    let only = |wanted: &[&str]| -> Result<(), Problem> {
        let given = [
            ("latency", g.latency.is_some()),
            ("jitter", g.jitter.is_some()),
            ("error", g.error.is_some()),
        ];
        match given.iter().find(|(key, set)| *set && !wanted.contains(key)) {
            Some((key, _)) => problem(
                span.clone(),
                format!("`{key}` does not apply to mode \"{mode_name}\""),
            ),
            None => Ok(()),
        }
    };
    let mode = match mode_name {
        "stall" => {
            only(&[])?;
            FsGateMode::Stall { scope }
        }
        "latency" => {
            only(&["latency", "jitter"])?;
            let Some(latency) = g.latency else {
                return problem(span, "mode \"latency\" needs `latency`, e.g. latency = \"200ms\"");
            };
            let jitter = g.jitter.map_or(Duration::ZERO, |d| d.0);
            if latency.0.is_zero() || jitter > latency.0 {
                return problem(span, "`latency` must be more than 0ms and `jitter` at most `latency`");
            }
            FsGateMode::Latency {
                scope,
                latency: latency.0,
                jitter,
            }
        }
        "error" => {
            only(&["error"])?;
            let errno = match g.error.as_ref().map(|e| (e.get_ref().as_str(), e.span())) {
                Some(("EIO", _)) => FsErrno::Eio,
                Some(("ENOSPC", _)) => FsErrno::Enospc,
                Some(("EROFS", _)) => FsErrno::Erofs,
                Some((other, at)) => {
                    return problem(
                        at,
                        format!("unknown error \"{other}\": expected \"EIO\", \"ENOSPC\" or \"EROFS\""),
                    )
                }
                None => return problem(span, "mode \"error\" needs `error`: \"EIO\", \"ENOSPC\" or \"EROFS\""),
            };
            FsGateMode::Error { scope, errno }
        }
        other => {
            return problem(
                g.mode.span(),
                format!("unknown fs_gate mode \"{other}\": expected \"stall\", \"latency\" or \"error\""),
            )
        }
    };
    Ok(FsGateFaultSpec { gate, mode })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"fs_gate = { gate = "mail", mode = "stall", scope = "writes" }"#;
