//! The scenario file format (TOML), as serde reads it. `docs/scenario-format.md` documents every
//! key. These types only mirror the file; `super::load` converts them into the model and checks
//! what serde cannot (references, exactly one kind per table, template variables). Each fault
//! kind's table is in that kind's module, `super::fault::*`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::fault::FaultSection;

/// A duration written as `"250ms"`, `"30s"`, `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::duration::parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub scenario: ScenarioSection,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub sink: SinkSection,
    #[serde(default)]
    pub probe: Vec<ProbeSection>,
    pub steady_state: Spanned<SteadyStateSection>,
    #[serde(default)]
    pub detect: Vec<DetectSection>,
    #[serde(default)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSection {
    pub name: String,
    pub description: Option<String>,
    pub incident: Option<String>,
    pub mitigation: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_targets: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub demo: Option<DemoSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    pub upstream_timeout: Option<Dur>,
    pub monitor: Option<MonitorSection>,
    pub host: Option<Spanned<String>>,
    pub database: Option<Spanned<DemoDatabaseSection>>,
    pub auth: Option<Spanned<DemoAuthSection>>,
    pub mailstore: Option<Spanned<String>>,
    pub failover: Option<Spanned<FailoverSetting>>,
    pub jobs: Option<Spanned<JobsSection>>,
}

/// `failover = "none"` or `failover = { inter, timeout, fall, rise, failback }`.
#[derive(Debug)]
pub enum FailoverSetting {
    /// Any string; only `"none"` is valid, which the check says with the string's place.
    Named(String),
    Checks(FailoverSection),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSection {
    pub inter: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    pub fall: Option<Spanned<u32>>,
    pub rise: Option<Spanned<u32>>,
    pub failback: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    pub per_request: Option<Spanned<u32>>,
    pub work: Option<Spanned<Dur>>,
    pub max_queue: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoAuthSection {
    pub profile: Option<Spanned<String>>,
    pub max_failures: Option<Spanned<u32>>,
    pub window: Option<Dur>,
    pub ban: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoDatabaseSection {
    pub postgres: Option<Spanned<String>>,
    pub mysql: Option<Spanned<String>>,
    pub profile: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub alertname: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    pub name: Spanned<String>,
    pub every: Option<Dur>,
    pub http: Option<HttpProbeSection>,
    pub tcp: Option<TcpProbeSection>,
    pub imap: Option<ImapProbeSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapProbeSection {
    pub address: Spanned<String>,
    pub user: Spanned<String>,
    pub password: String,
    pub mailbox: Option<String>,
    pub fetch_header: Option<String>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeSection {
    pub url: Spanned<String>,
    pub method: Option<Spanned<String>>,
    pub timeout: Option<Dur>,
    pub expect: Option<Vec<u16>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeSection {
    pub address: Spanned<String>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyStateSection {
    pub probe: Spanned<String>,
    pub window: Dur,
    pub min_success: Spanned<f64>,
    pub max_p99: Option<Dur>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSection {
    pub name: Spanned<String>,
    pub webhook: Option<WebhookDetectSection>,
    pub http: Option<HttpDetectSection>,
    pub command: Option<CommandDetectSection>,
    pub log: Option<LogDetectSection>,
    pub prometheus: Option<PrometheusDetectSection>,
    pub alertmanager: Option<Spanned<AlertmanagerDetectSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDetectSection {
    #[serde(rename = "match", default)]
    pub matchers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDetectSection {
    pub url: Spanned<String>,
    pub every: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandDetectSection {
    pub run: Spanned<Vec<Spanned<String>>>,
    pub every: Option<Dur>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogDetectSection {
    pub path: Spanned<String>,
    pub pattern: Spanned<String>,
    pub every: Option<Dur>,
}

/// `prometheus = { url, query, every, timeout, above }`: an instant query polled on a Prometheus
/// server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusDetectSection {
    pub url: Spanned<String>,
    pub query: Spanned<String>,
    pub every: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    pub above: Option<Spanned<f64>>,
}

/// `alertmanager = { url, match, every, timeout }`: the active alerts polled on an Alertmanager.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerDetectSection {
    pub url: Spanned<String>,
    #[serde(rename = "match")]
    pub matchers: Option<Spanned<BTreeMap<String, String>>>,
    pub every: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
}

/// `slowloris` and `connection_flood`: connections held open against a server.
/// A database error: a PostgreSQL SQLSTATE (`"55P03"`) or a MySQL error number (`1205`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbProxySection {
    pub name: Spanned<String>,
    pub postgres: Option<Spanned<String>>,
    pub mysql: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacklogSection {
    pub name: Spanned<String>,
    pub max: Spanned<f64>,
    pub every: Option<Dur>,
    pub timeout: Option<Dur>,
    pub metric: Option<MetricBacklogSection>,
    pub sql: Option<SqlBacklogSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricBacklogSection {
    pub url: Spanned<String>,
    pub name: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlBacklogSection {
    pub postgres: Option<Spanned<String>>,
    pub mysql: Option<Spanned<String>>,
    pub query: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSection {
    pub name: Spanned<String>,
    pub probe: Option<Spanned<String>>,
    pub min_success: Spanned<f64>,
    #[serde(rename = "for")]
    pub window: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatesSection {
    pub detect_within: Option<Spanned<Dur>>,
    pub recover_within: Option<Dur>,
    pub mitigate_within: Option<Dur>,
    pub max_error_ratio: Option<Spanned<f64>>,
    pub allowed_error_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_run: Option<Spanned<Dur>>,
    pub observe_after: Option<Dur>,
    pub inject_timeout: Option<Dur>,
}

/// `[[scratch_fs]]`: a file system relapse makes for the run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchFsSection {
    pub name: Spanned<String>,
    /// `"64MiB"`, `"1GiB"`.
    pub size: Option<Spanned<String>>,
}

/// `[[fs_gate]]`: a FUSE passthrough relapse mounts over a directory for the run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsGateSection {
    pub name: Spanned<String>,
    pub source: Spanned<String>,
}
