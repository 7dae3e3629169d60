//! `[target]`: the run's own processes (`[[target.process]]`) and the embedded demo
//! (`[target.demo]`, its failover, jobs, auth, database and monitor).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{patterns, Dur};

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
