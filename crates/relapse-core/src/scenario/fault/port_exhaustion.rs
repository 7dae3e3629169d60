//! `port_exhaustion`: take a network namespace's ephemeral ports away from `connect()`.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::check::Env;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{target, DemoHostKind, NetnsTarget, PortsMode, ReserveAmount};

/// `port_exhaustion`: take a network namespace's ephemeral ports.
#[derive(Debug, Clone, PartialEq)]
pub struct PortExhaustionSpec {
    pub target: NetnsTarget,
    pub mode: PortsMode,
    pub allow_own_namespace: bool,
}

/// `port_exhaustion = { … }`: exactly one target of `netns`, `pid`, `demo`, and a `mode` with
/// its settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortExhaustionSection {
    /// A network namespace `ip netns` knows, by name.
    pub netns: Option<String>,
    /// A process id: that process's network namespace.
    pub pid: Option<u32>,
    /// `"host"`: the demo's own namespace (needs `[target.demo] host = "netns"`).
    #[schemars(with = "Option<String>", extend("enum" = ["host"]))]
    pub demo: Option<Spanned<String>>,
    /// Allow relapse's own namespace as the target; default false.
    #[serde(default)]
    pub allow_own_namespace: bool,
    /// `"reserve"` (the default: bind ports without listening), `"leak"` (open and hold
    /// connections to `destination`) or `"time_wait"` (open and close them).
    #[schemars(
        with = "Option<String>",
        extend("enum" = ["reserve", "leak", "time_wait"])
    )]
    pub mode: Option<Spanned<String>>,
    /// With `reserve`: the part of the range to take, more than 0 and at most 1; default the
    /// whole range. Or `leave_free`.
    #[schemars(with = "Option<f64>")]
    pub fraction: Option<Spanned<f64>>,
    /// With `reserve`: take all but this many ports. Or `fraction`.
    pub leave_free: Option<u32>,
    /// With `leak` and `time_wait`, required there: where connections go, `IP:PORT` (a
    /// template).
    #[schemars(with = "Option<String>")]
    pub destination: Option<Spanned<String>>,
    /// With `leak` and `time_wait`: connections opened per second; default 1000.
    pub rate: Option<u32>,
    /// With `leak` and `time_wait`: connections opened in all; default 10000.
    pub count: Option<u32>,
}

pub fn check(section: &Spanned<PortExhaustionSection>, env: &Env) -> Result<PortExhaustionSpec, Problem> {
    let span = section.span();
    let pe = section.get_ref();
    let target = match (&pe.netns, &pe.pid, &pe.demo) {
        (Some(name), None, None) => NetnsTarget::Named(name.clone()),
        (None, Some(pid), None) => NetnsTarget::Pid(*pid),
        (None, None, Some(component)) => {
            if component.get_ref() != "host" {
                return problem(
                    component.span(),
                    format!(
                        "unknown demo component \"{}\" for port_exhaustion: expected \"host\"",
                        component.get_ref()
                    ),
                );
            }
            if env.demo.map(|d| d.host) != Some(DemoHostKind::Netns) {
                return problem(component.span(), "`demo = \"host\"` needs the demo to run as its own host: expected [target.demo] host = \"netns\"");
            }
            NetnsTarget::DemoHost
        }
        _ => {
            return problem(
                span,
                "port_exhaustion needs exactly one target: expected one of `netns`, `pid`, `demo`",
            )
        }
    };
    let mode_name = pe.mode.as_ref().map_or("reserve", |m| m.get_ref().as_str());
    let mode = match mode_name {
        "reserve" => {
            let amount = match (&pe.fraction, pe.leave_free) {
                (None, None) => ReserveAmount::All,
                (Some(f), None) => {
                    if !(*f.get_ref() > 0.0 && *f.get_ref() <= 1.0) {
                        return problem(f.span(), "fraction must lie in (0, 1]");
                    }
                    ReserveAmount::Fraction(*f.get_ref())
                }
                (None, Some(n)) => ReserveAmount::LeaveFree(n),
                (Some(f), Some(_)) => {
                    return problem(f.span(), "give `fraction` or `leave_free`, not both")
                }
            };
            PortsMode::Reserve(amount)
        }
        "leak" | "time_wait" => {
            let Some(destination) = &pe.destination else {
                return problem(
                    span,
                    format!("mode \"{mode_name}\" needs a `destination` (host:port)"),
                );
            };
            env.reachable(destination, target::address_host(destination.get_ref()))?;
            let destination = env.template(destination)?;
            let rate = pe.rate.unwrap_or(1000).max(1);
            let count = pe.count.unwrap_or(10_000).max(1);
            if mode_name == "leak" {
                PortsMode::Leak {
                    destination,
                    rate,
                    count,
                }
            } else {
                PortsMode::TimeWait {
                    destination,
                    rate,
                    count,
                }
            }
        }
        other => {
            let at = pe.mode.as_ref().map_or(span.clone(), |m| m.span());
            return problem(at, format!("unknown port_exhaustion mode \"{other}\": expected \"reserve\", \"leak\" or \"time_wait\""));
        }
    };
    Ok(PortExhaustionSpec {
        target,
        mode,
        allow_own_namespace: pe.allow_own_namespace,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"port_exhaustion = { netns = "blue" }"#;
