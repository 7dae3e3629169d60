//! The scenario file format (TOML), as serde reads it. `docs/scenario-format.md` documents every
//! key. These types only mirror the file; `super::load` converts them into the model and checks
//! what serde cannot (references, exactly one kind per table, template variables). Each fault
//! kind's table is in that kind's module, `super::fault::*`.
//!
//! Here: the scenario's top level and the sections the run makes (agents, db_proxies, scratch
//! file systems, gates, limits). `target` holds `[target]` and the demo's; `sense` the probes,
//! steady state, detection and backlog.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::fault::FaultSection;

mod sense;
mod target;

pub use sense::*;
pub use target::*;

/// A duration written as `"250ms"`, `"30s"`, `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (us, ms, s, m, h), e.g. \"250ms\", \"1.5s\", \"2m\".",
            "pattern": "^\\s*([0-9]+(\\.[0-9]*)?|\\.[0-9]+)\\s*(us|µs|ms|s|m|h)\\s*$"
        })
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::duration::parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// What the schema says of strings the loader checks by their shape, each with the check it
/// follows: a pattern matches everything that check accepts, never less (some match more, and
/// the rest is the loader's). JSON Schema's regular expressions (ECMA-262) have no flag for
/// case, so a word the loader takes in any case is spelled out as `[Gg][Ee][Tt]`.
pub(crate) mod patterns {
    use crate::scenario::{GATE_NAMES, HTTP_METHODS};

    /// `check::made_name`: `[[target.process]]`, `[[scratch_fs]]` and `[[fs_gate]]` names, and
    /// `ports`.
    pub const MADE_NAME: &str = "^[a-z0-9_-]{1,32}$";
    /// `check::db_proxy`: a `[[db_proxy]]` name.
    pub const PROXY_NAME: &str = "^[A-Za-z0-9_-]+$";
    /// `check::is_http_url`: `http://`, or a template that starts with a variable.
    pub const HTTP_URL: &str = "^(http://|\\{)";
    /// `check::demo` (`mailstore`), `check::fs_gate` (`source`): an absolute directory, or a
    /// template that starts with a variable.
    pub const DIRECTORY: &str = "^[/{]";
    /// `check::scratch_fs`: a size in MiB or GiB (its range is the loader's).
    pub const SIZE: &str = "^[0-9]+(MiB|GiB)$";
    /// `check::backlog`: a Prometheus metric name.
    pub const METRIC_NAME: &str = "^[A-Za-z0-9_:]+$";
    /// `check::http_method`: an HTTP method, in any case.
    pub fn http_method() -> String {
        format!("^{}$", any_case(HTTP_METHODS))
    }

    /// `check::process`: a stop signal, in any case, with or without `SIG`.
    pub fn signal() -> String {
        let names: Vec<&str> = crate::scenario::check::process::SIGNALS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        format!("^{}?{}$", any_case(&["SIG"]), any_case(&names))
    }

    /// `check::expect`: a gate name, optionally with an episode number (`recover_within[2]`);
    /// the loader trims the entry and reads the number as a `usize`, which may carry a `+`.
    pub fn expected_gate() -> String {
        format!(
            "^\\s*(?:{})(?:\\[\\+?[0-9]+\\])?\\s*$",
            GATE_NAMES.join("|")
        )
    }

    /// One of `words` (letters and digits) in any case, as a group.
    fn any_case(words: &[&str]) -> String {
        let spelled: Vec<String> = words
            .iter()
            .map(|word| {
                word.chars()
                    .map(|c| match c {
                        c if c.is_ascii_alphabetic() => {
                            format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                        }
                        c => c.to_string(),
                    })
                    .collect()
            })
            .collect();
        format!("(?:{})", spelled.join("|"))
    }
}

/// A relapse scenario: what to start, how to watch the target, which faults to inject, and the
/// gates a run must pass.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = require_probe_and_fault)]
pub struct ScenarioFile {
    /// `[scenario]` (required): names the run, says what it reproduces and what is expected of
    /// it, and which hosts besides loopback it may reach.
    pub scenario: ScenarioSection,
    /// `[target]`: what relapse starts for the run: the embedded demo (`[target.demo]`) and
    /// processes of your own (`[[target.process]]`).
    #[serde(default)]
    pub target: TargetSection,
    /// `[sink]`: where the harness's webhook sink, `{sink.url}`, listens for alerts.
    #[serde(default)]
    pub sink: SinkSection,
    /// `[[probe]]` (at least one): the SLI, what users feel, each probe checking every `every`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub probe: Vec<ProbeSection>,
    /// `[steady_state]` (required): what the SLI probe must show before any fault is injected,
    /// and again for the run to count as recovered.
    #[schemars(with = "SteadyStateSection")]
    pub steady_state: Spanned<SteadyStateSection>,
    /// `[[detect]]` (any number): how relapse learns that the system noticed; the first firing
    /// signal after a fault became effective gives the time to detect.
    #[serde(default)]
    pub detect: Vec<DetectSection>,
    /// `[[fault]]` (at least one): what to inject, when and for how long; faults whose active
    /// periods overlap form one episode.
    #[serde(default)]
    #[schemars(with = "Vec<FaultSection>", length(min = 1))]
    pub fault: Vec<Spanned<FaultSection>>,
    /// `[[stop]]` (any number): stop conditions, which abort the run when the target is hurt
    /// beyond what the experiment may cost.
    #[serde(default)]
    pub stop: Vec<StopSection>,
    /// `[[db_proxy]]` (any number): protocol-aware proxies between a target and its database,
    /// passing through until a `db_proxy` fault switches one.
    #[serde(default)]
    pub db_proxy: Vec<DbProxySection>,
    /// `[[scratch_fs]]` (any number): file systems relapse makes for the run (ext4 on a loop
    /// device), for file-system faults to act on; needs root.
    #[serde(default)]
    pub scratch_fs: Vec<ScratchFsSection>,
    /// `[[fs_gate]]` (any number): FUSE passthroughs relapse mounts for the run, passing every
    /// operation through until an `fs_gate` fault switches one.
    #[serde(default)]
    pub fs_gate: Vec<FsGateSection>,
    /// `[backlog]`: what a fault leaves behind (a mail queue, jobs); a run counts as recovered
    /// only once it is served again and the backlog is at or under its bound.
    pub backlog: Option<BacklogSection>,
    /// `[gates]`: the bounds each episode must meet for the run to pass; a fault's own `gates`
    /// go over them for its episode.
    #[serde(default)]
    pub gates: GatesSection,
    /// `[limits]`: how long a run and its parts may take.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[[agent]]` (any number): relapse agents on the target's other hosts, which apply the
    /// faults that say `on = "NAME"` there.
    #[serde(default)]
    pub agent: Vec<AgentSection>,
}

/// `[[agent]]`: a relapse agent (`relapse agent serve`) that applies faults on its host for
/// this run, over TLS, while the run holds its lease.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Required, unique; 1 to 32 of a-z, 0-9, `_`, `-`. Faults name it in `on`.
    #[schemars(with = "String", pattern(patterns::MADE_NAME))]
    pub name: Spanned<String>,
    /// Where the agent listens: `https://HOST:PORT`, the address its certificate names.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// The CA certificate (PEM) that signed the agent's certificate; relative to the
    /// scenario's directory. The run trusts this CA and nothing else for the agent.
    #[schemars(with = "String")]
    pub ca: Spanned<String>,
    /// The file holding the agent's token (at least 16 characters); relative to the scenario's
    /// directory.
    #[schemars(with = "String")]
    pub token_file: Spanned<String>,
    /// How long the agent keeps the run's faults after the last renewal: default 5s, 1s to 5m.
    /// When it lapses (the run died, the network was cut), the agent reverts them.
    #[schemars(with = "Option<Dur>")]
    pub lease: Option<Spanned<Dur>>,
    /// How often the run renews the lease: default 1s; less than `lease`.
    #[schemars(with = "Option<Dur>")]
    pub renew_every: Option<Spanned<Dur>>,
}

/// `[[probe]]` and `[[fault]]` default to none for serde, so that the loader can say what is
/// missing; a scenario needs at least one of each, so the schema requires them.
fn require_probe_and_fault(schema: &mut schemars::Schema) {
    if let Some(required) = schema
        .get_mut("required")
        .and_then(serde_json::Value::as_array_mut)
    {
        required.extend(["probe".into(), "fault".into()]);
    }
}

/// `[scenario]`: the run's name, what it reproduces, and what is expected of it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSection {
    /// Names the run in every report; required.
    pub name: String,
    /// What the scenario does, in a sentence.
    pub description: Option<String>,
    /// Which real outage this reproduces, e.g. `"FLG, 2017-03-17"`.
    pub incident: Option<String>,
    /// What mitigates the fault while it lasts (`"failover"`), named in the report: a label of
    /// 1 to 32 characters on one line; it changes nothing that is measured.
    #[schemars(with = "Option<String>")]
    pub mitigation: Option<Spanned<String>>,
    /// `"pass"` (the default) or `"fail"`: with `"fail"`, the run succeeds when its gates fail
    /// as expected and fails when they hold.
    #[schemars(with = "Option<String>", extend("enum" = ["pass", "fail"]))]
    pub expect: Option<Spanned<String>>,
    /// With `expect = "fail"`: exactly which gates must fail, each a gate the scenario sets, by
    /// name (`allowed_error_statuses`) or for one episode (`recover_within[2]`).
    #[schemars(
        with = "Option<Vec<String>>",
        length(min = 1),
        inner(pattern(patterns::expected_gate()))
    )]
    pub expect_failed: Option<Spanned<Vec<Spanned<String>>>>,
    /// Hosts besides loopback that probes and detection sources may reach, compared as
    /// written, never resolved.
    #[serde(default)]
    pub allow_targets: Vec<String>,
}

/// A fault's `on`: one `[[agent]]`'s name, or a list of them, over which a flood is spread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnAgents {
    One(String),
    Many(Vec<String>),
}

impl OnAgents {
    /// The names, in the order written.
    pub fn names(&self) -> Vec<String> {
        match self {
            OnAgents::One(name) => vec![name.clone()],
            OnAgents::Many(names) => names.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for OnAgents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OnAgents;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an [[agent]]'s name, or a list of them (\"a1\" or [\"a1\", \"a2\"])")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(OnAgents::One(text.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(OnAgents::Many(names))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[sink]`: the webhook sink, which receives alerts for `webhook` detection sources.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Where it listens, `IP:PORT`; default `"127.0.0.1:0"`, any free loopback port. Fix the
    /// port when an outside Alertmanager must be configured to send to it.
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
}

/// `[[db_proxy]]`: a protocol-aware proxy between a target and its database, run by relapse for
/// the whole run: pass-through (byte for byte) until a `db_proxy` fault switches it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbProxySection {
    /// Required, unique; letters, digits, `_`, `-`: `{db_proxy.NAME.address}`, `.host` and
    /// `.port` say where it listens.
    #[schemars(with = "String", pattern(patterns::PROXY_NAME))]
    pub name: Spanned<String>,
    /// A PostgreSQL server to proxy, `HOST:PORT`; loopback or allowed. Or `mysql`.
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    /// A MariaDB/MySQL server to proxy, `HOST:PORT`; loopback or allowed. Or `postgres`.
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    /// Where the proxy listens, `IP:PORT` on loopback only; default `"127.0.0.1:0"`, a free
    /// port.
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
}

/// `[[stop]]`: a stop condition, judged from the first injection on: when the success ratio
/// over the last `for` of completed checks falls under `min_success`, every fault is reverted
/// at once and the run is aborted.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSection {
    /// Names the condition in the report; required.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The probe, by name; default the steady-state probe.
    #[schemars(with = "Option<String>")]
    pub probe: Option<Spanned<String>>,
    /// Abort when the success ratio falls under this, 0 to 1; required.
    #[schemars(with = "f64", range(min = 0, max = 1))]
    pub min_success: Spanned<f64>,
    /// The trailing window the ratio is judged over; required, at least one probe interval.
    #[serde(rename = "for")]
    pub window: Dur,
}

/// `[gates]`, and a fault's own `gates`: the bounds an episode must meet for the run to pass.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatesSection {
    /// Time to detect at most this (not detected = failed); needs a `[[detect]]`.
    #[schemars(with = "Option<Dur>")]
    pub detect_within: Option<Spanned<Dur>>,
    /// Time to recover at most this (not recovered = failed).
    pub recover_within: Option<Dur>,
    /// Steady state returned while the fault was still active, within this; passes when the SLI
    /// was never impacted.
    pub mitigate_within: Option<Dur>,
    /// The most failed SLI samples from injection until recovery, as a ratio, 0 to 1.
    #[schemars(with = "Option<f64>", range(min = 0, max = 1))]
    pub max_error_ratio: Option<Spanned<f64>>,
    /// The statuses failed SLI samples may carry during impact; timeouts and refused
    /// connections have none to judge.
    pub allowed_error_statuses: Option<Vec<u16>>,
    /// The episode's request flood (`http_flood`; a spread flood's latencies merged from its
    /// shards') answered with a p99 latency of at most this; not answered = failed.
    #[schemars(with = "Option<Dur>")]
    pub flood_p99_within: Option<Spanned<Dur>>,
    /// The episode's request flood sent at least this share of the requests due at its rate, 0
    /// to 1 (open model): below it the load the run judged was not the load asked for. A
    /// spread flood's lost shard counts as due and not sent.
    #[schemars(with = "Option<f64>", range(min = 0, max = 1))]
    pub flood_min_delivered: Option<Spanned<f64>>,
}

/// `[limits]`: how long a run and its parts may take.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// The whole run; past it, faults are reverted and the run is aborted. Default `"10m"`, at
    /// most `"1h"`.
    #[schemars(with = "Option<Dur>")]
    pub max_run: Option<Spanned<Dur>>,
    /// How long to watch after the last revert, at most; default `"30s"`.
    pub observe_after: Option<Dur>,
    /// How long an injector may take to confirm a fault; default `"10s"`.
    pub inject_timeout: Option<Dur>,
}

/// `[[scratch_fs]]`: a file system relapse makes for the run: a sparse ext4 image on a loop
/// device, mounted at `{scratch_fs.NAME.path}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScratchFsSection {
    /// Required, unique; 1 to 32 of a-z, 0-9, `_`, `-`.
    #[schemars(with = "String", pattern(patterns::MADE_NAME))]
    pub name: Spanned<String>,
    /// The image's size, `"64MiB"`, `"1GiB"`: default 64MiB, 16MiB to 4GiB (the image is
    /// sparse).
    #[schemars(with = "Option<String>", pattern(patterns::SIZE))]
    pub size: Option<Spanned<String>>,
}

/// `[[fs_gate]]`: a FUSE passthrough relapse mounts over a directory for the run, at
/// `{fs_gate.NAME.path}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsGateSection {
    /// Required, unique; 1 to 32 of a-z, 0-9, `_`, `-`.
    #[schemars(with = "String", pattern(patterns::MADE_NAME))]
    pub name: Spanned<String>,
    /// The directory passed through: absolute, or a template (`"{scratch_fs.mail.path}"`);
    /// required.
    #[schemars(with = "String", pattern(patterns::DIRECTORY))]
    pub source: Spanned<String>,
}
