//! How a run watches its target: `[[probe]]` (imap, http, tcp), `[steady_state]`, `[detect]`
//! (webhook, http, command, log, prometheus, alertmanager) and `[backlog]`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::{patterns, Dur};

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
