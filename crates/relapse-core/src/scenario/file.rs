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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub scenario: ScenarioSection,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub sink: SinkSection,
    #[serde(default)]
    pub probe: Vec<ProbeSection>,
    #[schemars(with = "SteadyStateSection")]
    pub steady_state: Spanned<SteadyStateSection>,
    #[serde(default)]
    pub detect: Vec<DetectSection>,
    #[serde(default)]
    #[schemars(with = "Vec<FaultSection>")]
    pub fault: Vec<Spanned<FaultSection>>,
    #[serde(default)]
    pub stop: Vec<StopSection>,
    #[serde(default)]
    pub db_proxy: Vec<DbProxySection>,
    #[serde(default)]
    pub scratch_fs: Vec<ScratchFsSection>,
    #[serde(default)]
    pub fs_gate: Vec<FsGateSection>,
    pub backlog: Option<BacklogSection>,
    #[serde(default)]
    pub gates: GatesSection,
    #[serde(default)]
    pub limits: LimitsSection,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSection {
    pub name: String,
    pub description: Option<String>,
    pub incident: Option<String>,
    #[schemars(with = "Option<String>")]
    pub mitigation: Option<Spanned<String>>,
    /// `"pass"` (the default) or `"fail"`.
    #[schemars(with = "Option<String>")]
    pub expect: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    pub expect_failed: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub allow_targets: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub demo: Option<DemoSection>,
    #[serde(default)]
    pub process: Vec<ProcessSection>,
}

/// `[[target.process]]`: a process relapse starts for the run and stops after it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The program and its arguments, each a template.
    #[schemars(with = "Vec<String>")]
    pub run: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<String, Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// Names of free loopback ports to pick for the run: `{port.NAME}`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ports: Vec<Spanned<String>>,
    /// Files written into `{run.dir}` before the process starts: relative path → content.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub files: BTreeMap<String, Spanned<String>>,
    #[schemars(with = "Option<ReadySection>")]
    pub ready: Option<Spanned<ReadySection>>,
    pub stop: Option<StopProcessSection>,
}

/// `ready = { tcp = "…" | http = "…" | log = "…", status, timeout }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadySection {
    #[schemars(with = "Option<String>")]
    pub tcp: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub http: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub log: Option<Spanned<String>>,
    pub status: Option<Vec<u16>>,
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
}

/// `stop = { signal = "TERM", grace = "5s" }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopProcessSection {
    #[schemars(with = "Option<String>")]
    pub signal: Option<Spanned<String>>,
    #[schemars(with = "Option<Dur>")]
    pub grace: Option<Spanned<Dur>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    pub upstream_timeout: Option<Dur>,
    pub monitor: Option<MonitorSection>,
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    #[schemars(with = "Option<DemoDatabaseSection>")]
    pub database: Option<Spanned<DemoDatabaseSection>>,
    #[schemars(with = "Option<DemoAuthSection>")]
    pub auth: Option<Spanned<DemoAuthSection>>,
    #[schemars(with = "Option<String>")]
    pub mailstore: Option<Spanned<String>>,
    #[schemars(with = "Option<FailoverSetting>")]
    pub failover: Option<Spanned<FailoverSetting>>,
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverSection {
    #[schemars(with = "Option<Dur>")]
    pub inter: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<u32>")]
    pub fall: Option<Spanned<u32>>,
    #[schemars(with = "Option<u32>")]
    pub rise: Option<Spanned<u32>>,
    pub failback: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    #[schemars(with = "Option<u32>")]
    pub per_request: Option<Spanned<u32>>,
    #[schemars(with = "Option<Dur>")]
    pub work: Option<Spanned<Dur>>,
    #[schemars(with = "Option<u64>")]
    pub max_queue: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoAuthSection {
    #[schemars(with = "Option<String>")]
    pub profile: Option<Spanned<String>>,
    #[schemars(with = "Option<u32>")]
    pub max_failures: Option<Spanned<u32>>,
    pub window: Option<Dur>,
    pub ban: Option<Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoDatabaseSection {
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub profile: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub alertname: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub every: Option<Dur>,
    pub http: Option<HttpProbeSection>,
    pub tcp: Option<TcpProbeSection>,
    pub imap: Option<ImapProbeSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImapProbeSection {
    #[schemars(with = "String")]
    pub address: Spanned<String>,
    #[schemars(with = "String")]
    pub user: Spanned<String>,
    pub password: String,
    pub mailbox: Option<String>,
    pub fetch_header: Option<String>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeSection {
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub method: Option<Spanned<String>>,
    pub timeout: Option<Dur>,
    pub expect: Option<Vec<u16>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeSection {
    #[schemars(with = "String")]
    pub address: Spanned<String>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteadyStateSection {
    #[schemars(with = "String")]
    pub probe: Spanned<String>,
    pub window: Dur,
    #[schemars(with = "f64")]
    pub min_success: Spanned<f64>,
    pub max_p99: Option<Dur>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub webhook: Option<WebhookDetectSection>,
    pub http: Option<HttpDetectSection>,
    pub command: Option<CommandDetectSection>,
    pub log: Option<LogDetectSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDetectSection {
    #[serde(rename = "match", default)]
    pub matchers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDetectSection {
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    pub every: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandDetectSection {
    #[schemars(with = "Vec<String>")]
    pub run: Spanned<Vec<Spanned<String>>>,
    pub every: Option<Dur>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDetectSection {
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    #[schemars(with = "String")]
    pub pattern: Spanned<String>,
    pub every: Option<Dur>,
}

/// `slowloris` and `connection_flood`: connections held open against a server.
/// A database error: a PostgreSQL SQLSTATE (`"55P03"`) or a MySQL error number (`1205`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbProxySection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacklogSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "f64")]
    pub max: Spanned<f64>,
    pub every: Option<Dur>,
    pub timeout: Option<Dur>,
    pub metric: Option<MetricBacklogSection>,
    pub sql: Option<SqlBacklogSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricBacklogSection {
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    #[schemars(with = "String")]
    pub name: Spanned<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlBacklogSection {
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub query: Spanned<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub probe: Option<Spanned<String>>,
    #[schemars(with = "f64")]
    pub min_success: Spanned<f64>,
    #[serde(rename = "for")]
    pub window: Dur,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatesSection {
    #[schemars(with = "Option<Dur>")]
    pub detect_within: Option<Spanned<Dur>>,
    pub recover_within: Option<Dur>,
    pub mitigate_within: Option<Dur>,
    #[schemars(with = "Option<f64>")]
    pub max_error_ratio: Option<Spanned<f64>>,
    pub allowed_error_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[schemars(with = "Option<Dur>")]
    pub max_run: Option<Spanned<Dur>>,
    pub observe_after: Option<Dur>,
    pub inject_timeout: Option<Dur>,
}

/// `[[scratch_fs]]`: a file system relapse makes for the run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScratchFsSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// `"64MiB"`, `"1GiB"`.
    #[schemars(with = "Option<String>")]
    pub size: Option<Spanned<String>>,
}

/// `[[fs_gate]]`: a FUSE passthrough relapse mounts over a directory for the run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsGateSection {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "String")]
    pub source: Spanned<String>,
}
