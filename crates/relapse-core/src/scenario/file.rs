//! The scenario file format (TOML), as serde reads it. `docs/scenario-format.md` documents every
//! key. These types only mirror the file; `super::load` converts them into the model and checks
//! what serde cannot (references, exactly one kind per table, template variables). Each fault
//! kind's table is in that kind's module, `super::fault::*`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::fault::FaultSection;

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

/// `[target]`: what relapse starts for the run.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// `[target.demo]`: the embedded demo target, a small hosted-mail stack, started for this
    /// run and stopped after it.
    pub demo: Option<DemoSection>,
    /// `[[target.process]]`: processes relapse starts for the run, one after the other in the
    /// order written, each ready before the next starts, and stops after it.
    #[serde(default)]
    pub process: Vec<ProcessSection>,
}

/// `[[target.process]]`: a process relapse starts for the run and stops after it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// Required, unique; 1 to 32 of a-z, 0-9, `_`, `-`: faults name the process by it
    /// (`process = "NAME"`), as do `{process.NAME.pid}` and `{process.NAME.log}`.
    #[schemars(with = "String", pattern(patterns::MADE_NAME))]
    pub name: Spanned<String>,
    /// The program and its arguments, each a template; required.
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub run: Spanned<Vec<Spanned<String>>>,
    /// Environment variables added to relapse's environment for the process; values are
    /// templates.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<String, Spanned<String>>,
    /// The working directory (a template); `{run.dir}` by default.
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// Names of free loopback ports to pick for the run, `{port.NAME}`: 1 to 32 of a-z, 0-9,
    /// `_`, `-`.
    #[serde(default)]
    #[schemars(with = "Vec<String>", inner(pattern(patterns::MADE_NAME)))]
    pub ports: Vec<Spanned<String>>,
    /// Files written into `{run.dir}` before the process starts: relative path (no `..`) →
    /// content, in which only a `{name}` shaped like a variable is a variable.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub files: BTreeMap<String, Spanned<String>>,
    /// When the process counts as ready: exactly one of `tcp`, `http`, `log`. Without it, once
    /// started.
    #[schemars(with = "Option<ReadySection>")]
    pub ready: Option<Spanned<ReadySection>>,
    /// How the process is stopped at the end of the run, in reverse order of start; default
    /// `{ signal = "TERM", grace = "5s" }`.
    pub stop: Option<StopProcessSection>,
}

/// `ready = { tcp = "…" | http = "…" | log = "…", status, timeout }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadySection {
    /// Ready once a connect to `HOST:PORT` (a template) succeeds.
    #[schemars(with = "Option<String>")]
    pub tcp: Option<Spanned<String>>,
    /// Ready once a GET of this URL (a template, `http://`) answers one of `status`.
    #[schemars(with = "Option<String>", pattern(patterns::HTTP_URL))]
    pub http: Option<Spanned<String>>,
    /// Ready once a line of the process's output matches this regular expression.
    #[schemars(with = "Option<String>")]
    pub log: Option<Spanned<String>>,
    /// With `http`: the statuses that count as ready, 100 to 599; default `[200]`.
    #[schemars(length(min = 1), inner(range(min = 100, max = 599)))]
    pub status: Option<Vec<u16>>,
    /// How long to wait, polling every 50 ms, before the run is inconclusive; default `"10s"`,
    /// at most `"5m"`.
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
}

/// `stop = { signal = "TERM", grace = "5s" }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopProcessSection {
    /// Sent to the process's group: TERM (the default), INT, QUIT, HUP, KILL, USR1 or USR2, in
    /// any case, with or without `SIG`.
    #[schemars(with = "Option<String>", pattern(patterns::signal()))]
    pub signal: Option<Spanned<String>>,
    /// How long after `signal` the group gets SIGKILL; default `"5s"`, at most `"1m"`.
    #[schemars(with = "Option<Dur>")]
    pub grace: Option<Spanned<Dur>>,
}

/// `[target.demo]`: a backend (the "database"), a frontend (webmail) and a monitor, started for
/// the run and stopped after it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    /// How long the frontend waits for the backend (then 504 / 503), and the bound of every
    /// database statement; default `"250ms"`.
    pub upstream_timeout: Option<Dur>,
    /// The monitor, which checks the frontend's `/health` and POSTs an Alertmanager alert to
    /// `{sink.url}`.
    pub monitor: Option<MonitorSection>,
    /// `"loopback"` (the default) or `"netns"`: the frontend runs as its own host, in a network
    /// namespace relapse creates (needs root and iproute2).
    #[schemars(with = "Option<String>", extend("enum" = ["loopback", "netns"]))]
    pub host: Option<Spanned<String>>,
    /// The frontend keeps its mail on PostgreSQL or MariaDB/MySQL, in tables of its own:
    /// exactly one of `postgres`, `mysql`.
    #[schemars(with = "Option<DemoDatabaseSection>")]
    pub database: Option<Spanned<DemoDatabaseSection>>,
    /// The frontend serves `POST /login`, with real Argon2id hashing and a limiter that blocks
    /// a source address after failed logins.
    #[schemars(with = "Option<DemoAuthSection>")]
    pub auth: Option<Spanned<DemoAuthSection>>,
    /// A directory (absolute, or a template such as `"{scratch_fs.mail.path}"`) where the
    /// backend keeps mail as a maildir.
    #[schemars(with = "Option<String>", pattern(patterns::DIRECTORY))]
    pub mailstore: Option<Spanned<String>>,
    /// `"none"` (the default: one backend, no checks) or a standby backend, with the frontend's
    /// health checks of both: `{ inter, timeout, fall, rise, failback }`.
    #[schemars(with = "Option<FailoverSetting>")]
    pub failover: Option<Spanned<FailoverSetting>>,
    /// Background work every `GET /` on the frontend queues, run by one worker against the
    /// active backend.
    #[schemars(with = "Option<JobsSection>")]
    pub jobs: Option<Spanned<JobsSection>>,
}

/// `failover = "none"` or `failover = { inter, timeout, fall, rise, failback }`.
#[derive(Debug)]
pub enum FailoverSetting {
    /// Any string; only `"none"` is valid, which the check says with the string's place.
    Named(String),
    Checks(FailoverSection),
}

impl JsonSchema for FailoverSetting {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FailoverSetting".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let checks = generator.subschema_for::<FailoverSection>();
        schemars::json_schema!({
            "description": "\"none\" (one backend, the default) or the frontend's health checks of a primary and a standby.",
            "oneOf": [{ "const": "none" }, checks]
        })
    }
}

impl<'de> Deserialize<'de> for FailoverSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FailoverSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"none\" or a table { inter, timeout, fall, rise, failback }")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(FailoverSetting::Named(text.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                // Through the table's own deserializer, so its unknown keys and bad values keep
                // their place in the file.
                FailoverSection::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(FailoverSetting::Checks)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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

/// `failover = { … }`: the frontend checks the primary and the standby the way a load balancer
/// does, and sends every request to the active one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverSection {
    /// How often a round of checks starts; default `"250ms"`, more than 0.
    #[schemars(with = "Option<Dur>")]
    pub inter: Option<Spanned<Dur>>,
    /// The bound of each check of a backend's `/health`; default `"250ms"`, more than 0.
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
    /// Failed checks in a row that make a backend DOWN; default 2, at least 1.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub fall: Option<Spanned<u32>>,
    /// Passed checks in a row that make it UP again; default 2, at least 1.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub rise: Option<Spanned<u32>>,
    /// Whether traffic returns to the primary once it is UP again; default false (a promoted
    /// standby stays active).
    pub failback: Option<bool>,
}

/// `jobs = { per_request, work, max_queue }`: background work, as FLG's workflows were.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Jobs each `GET /` queues when it arrives, whatever its answer; default 1, 1 to 1000.
    #[schemars(with = "Option<u32>", range(min = 1, max = 1000))]
    pub per_request: Option<Spanned<u32>>,
    /// How long each job takes the backend; default `"20ms"`, more than 0 and less than
    /// `upstream_timeout`.
    #[schemars(with = "Option<Dur>")]
    pub work: Option<Spanned<Dur>>,
    /// Past this many queued jobs, new ones are dropped and counted; default 100000, 1 to
    /// 10000000.
    #[schemars(with = "Option<u64>", range(min = 1, max = 10_000_000))]
    pub max_queue: Option<Spanned<u64>>,
}

/// `auth = { profile, max_failures, window, ban }`: the frontend's logins and their limiter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoAuthSection {
    /// `"mitigation"` (the default: the limiter is on) or `"no_mitigation"` (it is off).
    #[schemars(
        with = "Option<String>",
        extend("enum" = ["mitigation", "no_mitigation"])
    )]
    pub profile: Option<Spanned<String>>,
    /// Failed logins from one source address within `window` that block it; default 3, at
    /// least 1.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub max_failures: Option<Spanned<u32>>,
    /// How far back failed logins count; default `"10s"`, more than 0.
    pub window: Option<Dur>,
    /// How long a blocked source's requests get 429 at once, without hashing; default `"30s"`,
    /// more than 0.
    pub ban: Option<Dur>,
}

/// `database = { postgres | mysql, profile }`: the demo's mail on a real database.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoDatabaseSection {
    /// A PostgreSQL DSN or URL: a template that may use `{db_proxy.NAME.*}`, not `{demo.*}`.
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    /// A MariaDB/MySQL URL, `mysql://…`: a template that may use `{db_proxy.NAME.*}`, not
    /// `{demo.*}`.
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    /// What the frontend answers during a database outage: `"honest"` (the default: 503 with
    /// Retry-After) or `"misleading_errors"` (401 with a "planned maintenance" page).
    #[schemars(
        with = "Option<String>",
        extend("enum" = ["honest", "misleading_errors"])
    )]
    pub profile: Option<Spanned<String>>,
}

/// `monitor = { interval, timeout, fall, rise, alertname }`: the demo's monitor of the
/// frontend's `/health`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    /// How often it checks; default `"500ms"`.
    pub interval: Option<Dur>,
    /// The bound of each check; default `"1s"`.
    pub timeout: Option<Dur>,
    /// Failed checks in a row before it POSTs a firing alert; default 3.
    pub fall: Option<u32>,
    /// Good checks in a row before it POSTs a resolved one; default 2.
    pub rise: Option<u32>,
    /// The alert's name; default `"FrontendDown"`.
    pub alertname: Option<String>,
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

/// `[[probe]]`: one SLI probe, checking every `every` without waiting for the previous check;
/// exactly one kind of `http`, `tcp`, `imap`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// Required, unique; `[steady_state]` and `[[stop]]` name the probe by it.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// How often it checks; default `"100ms"`, more than 0.
    pub every: Option<Dur>,
    /// An HTTP request; a check fails on another status, a timeout or a connection error.
    pub http: Option<HttpProbeSection>,
    /// A TCP connect; success = connected.
    pub tcp: Option<TcpProbeSection>,
    /// An IMAP session: LOGIN, SELECT (and FETCH a header), LOGOUT; success = every step
    /// answered OK in time.
    pub imap: Option<ImapProbeSection>,
    /// The `[[agent]]` whose host the checks go out from (the SLI as users elsewhere see it);
    /// its clock's instants are mapped to this host's. Optional: from relapse's own host.
    #[schemars(with = "Option<String>")]
    pub on: Option<Spanned<String>>,
}

/// `imap = { address, user, password, mailbox, fetch_header, timeout }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImapProbeSection {
    /// `host:port` (a template), plain IMAP; required.
    #[schemars(with = "String")]
    pub address: Spanned<String>,
    /// The user to log in as; required, not empty.
    #[schemars(with = "String", length(min = 1))]
    pub user: Spanned<String>,
    /// The user's password; required.
    pub password: String,
    /// The mailbox to SELECT; default `"INBOX"`.
    pub mailbox: Option<String>,
    /// A header field fetched from the first message, optional.
    pub fetch_header: Option<String>,
    /// The bound of the whole session; default `"1s"`.
    pub timeout: Option<Dur>,
}

/// `http = { url, method, timeout, expect, headers, body }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeSection {
    /// The URL to check: a template, `http://` only; required.
    #[schemars(with = "String", pattern(patterns::HTTP_URL))]
    pub url: Spanned<String>,
    /// GET (the default), HEAD, POST, PUT, DELETE, OPTIONS or PATCH, in any case.
    #[schemars(with = "Option<String>", pattern(patterns::http_method()))]
    pub method: Option<Spanned<String>>,
    /// The bound of each check; default `"1s"`.
    pub timeout: Option<Dur>,
    /// The statuses that count as success, 100 to 599; default `[200]`.
    #[schemars(length(min = 1), inner(range(min = 100, max = 599)))]
    pub expect: Option<Vec<u16>>,
    /// Header fields sent with every check, name → value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A body sent with every check.
    pub body: Option<String>,
}

/// `tcp = { address, timeout }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeSection {
    /// `host:port` (a template); required.
    #[schemars(with = "String")]
    pub address: Spanned<String>,
    /// The bound of each connect; default `"1s"`.
    pub timeout: Option<Dur>,
}

/// `[steady_state]`: it holds over a window when the SLI checks sent in it number at least half
/// of what `every` promises, succeed at least `min_success` of the time, and have a p99 latency
/// at most `max_p99`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteadyStateSection {
    /// The SLI probe, by name; required.
    #[schemars(with = "String")]
    pub probe: Spanned<String>,
    /// The sliding window W; required, at least one probe interval.
    pub window: Dur,
    /// The success ratio over the window, 0 to 1; required.
    #[schemars(with = "f64", range(min = 0, max = 1))]
    pub min_success: Spanned<f64>,
    /// The p99 latency over the window (nearest rank), at most this; optional.
    pub max_p99: Option<Dur>,
    /// How long to wait for steady state before injecting (then nothing is injected and the
    /// run is inconclusive); default `"30s"`.
    pub timeout: Option<Dur>,
}

/// `[[detect]]`: one detection source; exactly one kind of `webhook`, `http`, `command`, `log`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectSection {
    /// Required, unique; names the source in the report.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// An alert POSTed to `{sink.url}` (any path); pushed, so resolution 0.
    pub webhook: Option<WebhookDetectSection>,
    /// Polls a URL; fires when the status leaves `healthy` or the check fails, clears when it
    /// returns.
    pub http: Option<HttpDetectSection>,
    /// Runs a program every `every`; fires on a non-zero exit or a timeout, clears on exit 0.
    pub command: Option<CommandDetectSection>,
    /// Reads lines appended to a file after the run starts; each line matching `pattern`
    /// fires.
    pub log: Option<LogDetectSection>,
    /// Polls a PromQL instant query on a Prometheus; fires while it returns a result, clears
    /// when it stops.
    pub prometheus: Option<PrometheusDetectSection>,
    /// Polls an Alertmanager's active alerts (API v2); fires on the first that matches, clears
    /// when none is left. No change to the team's routing.
    #[schemars(with = "Option<AlertmanagerDetectSection>")]
    pub alertmanager: Option<Spanned<AlertmanagerDetectSection>>,
}

/// `webhook = { match = { … } }`: Alertmanager (v4) alerts fire (`firing`) or clear
/// (`resolved`); a plain JSON object's labels are its top-level string fields (and a `labels`
/// object), and `"status": "resolved"` clears.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDetectSection {
    /// The label pairs an alert must include to count, name → value; default none: every
    /// alert counts.
    #[serde(rename = "match", default)]
    pub matchers: BTreeMap<String, String>,
}

/// `http = { url, every, timeout, healthy }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDetectSection {
    /// The URL to poll: a template, `http://`; required.
    #[schemars(with = "String", pattern(patterns::HTTP_URL))]
    pub url: Spanned<String>,
    /// How often it polls; default `"250ms"`.
    pub every: Option<Dur>,
    /// The bound of each poll; default `"1s"`.
    pub timeout: Option<Dur>,
    /// The statuses that count as healthy, 100 to 599; default `[200]`.
    #[schemars(length(min = 1), inner(range(min = 100, max = 599)))]
    pub healthy: Option<Vec<u16>>,
}

/// `command = { run, every, timeout }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandDetectSection {
    /// The program and its arguments, each a template; required.
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub run: Spanned<Vec<Spanned<String>>>,
    /// How often it runs; default `"1s"`.
    pub every: Option<Dur>,
    /// Killed after this, which fires; default `"5s"`.
    pub timeout: Option<Dur>,
}

/// `log = { path, pattern, every }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDetectSection {
    /// The file to read (a template); required.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// A regular expression; each line that matches fires. Required.
    #[schemars(with = "String")]
    pub pattern: Spanned<String>,
    /// How often new lines are read; default `"100ms"`.
    pub every: Option<Dur>,
}

/// `prometheus = { url, query, every, timeout, above }`: an instant query polled on a Prometheus
/// server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusDetectSection {
    /// The Prometheus server's base URL, `http://` (a template), e.g. `"http://127.0.0.1:9090"`;
    /// required.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// A PromQL instant query; fires while it returns a result (with `above`, a sample over it).
    /// Not a template: PromQL writes label matchers in braces. Required.
    #[schemars(with = "String")]
    pub query: Spanned<String>,
    /// How often the query is run; default `"250ms"`; also the source's resolution.
    #[schemars(with = "Option<Dur>")]
    pub every: Option<Spanned<Dur>>,
    /// The bound of one poll; default `"1s"`.
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
    /// Fire only while some sample is over this value (finite); NaN never counts.
    #[schemars(with = "Option<f64>")]
    pub above: Option<Spanned<f64>>,
}

/// `alertmanager = { url, match, every, timeout }`: the active alerts polled on an Alertmanager.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerDetectSection {
    /// The Alertmanager's base URL, `http://` (a template), e.g. `"http://127.0.0.1:9093"`;
    /// required.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Labels an active alert must all have (as the webhook's `match`); required, not empty.
    #[serde(rename = "match")]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub matchers: Option<Spanned<BTreeMap<String, String>>>,
    /// How often the active alerts are read; default `"250ms"`; also the source's resolution.
    #[schemars(with = "Option<Dur>")]
    pub every: Option<Spanned<Dur>>,
    /// The bound of one poll; default `"1s"`.
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
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

/// `[backlog]`: a gauge recovery also waits out; exactly one kind of `metric`, `sql`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacklogSection {
    /// Names the backlog in the report; required.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Drained means at or under this; required, at least 0.
    #[schemars(with = "f64", range(min = 0))]
    pub max: Spanned<f64>,
    /// How often it is read; default `"100ms"`, more than 0.
    pub every: Option<Dur>,
    /// A slower reading counts as unreadable; default `"1s"`.
    pub timeout: Option<Dur>,
    /// Reads a Prometheus text exposition and sums every sample of a metric (all label sets).
    pub metric: Option<MetricBacklogSection>,
    /// Runs a query on its own connection and takes the first column of the first row.
    pub sql: Option<SqlBacklogSection>,
}

/// `metric = { url, name }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricBacklogSection {
    /// The exposition's URL: a template, `http://`; required.
    #[schemars(with = "String", pattern(patterns::HTTP_URL))]
    pub url: Spanned<String>,
    /// The metric name, e.g. `"relapse_demo_queue_depth"`; required.
    #[schemars(with = "String", pattern(patterns::METRIC_NAME))]
    pub name: Spanned<String>,
}

/// `sql = { postgres | mysql, query }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlBacklogSection {
    /// A PostgreSQL DSN or URL (a template). Or `mysql`.
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    /// A MariaDB/MySQL URL, `mysql://…` (a template). Or `postgres`.
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    /// The query (a template), e.g. `"SELECT count(*) FROM {demo.queue_table}"`; required.
    #[schemars(with = "String")]
    pub query: Spanned<String>,
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
