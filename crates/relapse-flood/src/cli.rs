//! The command line of a standalone flood, shared by `relapse flood` and the `relapse-flood`
//! bench binary: one definition of the flags, one way to build the spec and print the report.

use std::net::IpAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{run_load_on_threads, LoadReport, LoadSpec, RequestTemplate, Sources, SourcesExt};

/// The longest a standalone flood may run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Flags of a standalone flood, like wrk's or oha's. Every flood is bounded by `--duration`
/// and `--requests`, and reaches only loopback unless `--allow-target` names its address.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// http://IP:PORT/PATH; the path may hold {seq}, {source}, {rand.u32}, {rand.alnum:N}.
    pub url: String,
    /// Connections (closed model), or the most requests in flight (open model).
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=crate::MAX_CONNECTIONS as u64))]
    pub connections: u64,
    /// How long to run at most (at most 1h).
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests to send at most.
    #[arg(short = 'n', long, default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub requests: u64,
    /// Open model at this many requests per second (latency counted from when each request was
    /// due); without it, the closed model (each connection as fast as it is answered).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Ramp the open model's rate up from 0 over this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ramp_up: Duration,
    /// Threads, each with its own runtime and share of the connections [default: the cores].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Request method [default: GET, or POST with --body].
    #[arg(short = 'm', long)]
    pub method: Option<String>,
    /// Request body (placeholders allowed); sent as a form unless -H sets a content-type.
    #[arg(long)]
    pub body: Option<String>,
    /// Extra header, `Name: value` (placeholders allowed); repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Source addresses as a CIDR, e.g. 127.9.0.0/24, one per connection in turn.
    #[arg(long, conflicts_with = "sources")]
    pub source_cidr: Option<String>,
    /// A source address; repeatable.
    #[arg(long = "source")]
    pub sources: Vec<IpAddr>,
    /// One connection per request instead of keep-alive.
    #[arg(long)]
    pub no_keep_alive: bool,
    /// How long one request may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Count requests, statuses and errors per source address.
    #[arg(long)]
    pub per_source: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also allow this target address (by default only loopback).
    #[arg(long = "allow-target", value_name = "IP")]
    pub allow_targets: Vec<IpAddr>,
}

impl FloodArgs {
    /// The load to run, checked: an error is bad input.
    pub fn spec(&self) -> Result<LoadSpec, String> {
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(format!(
                "--duration must be more than 0s and at most {}",
                humantime::format_duration(MAX_DURATION)
            ));
        }
        let (target, path) = LoadSpec::parse_url(&self.url).map_err(|e| e.to_string())?;
        let body = self.body.as_deref().unwrap_or("");
        let method =
            self.method
                .as_deref()
                .unwrap_or(if self.body.is_some() { "POST" } else { "GET" });
        let mut request = RequestTemplate::new(&method.to_ascii_uppercase(), &path, body)
            .map_err(|e| e.to_string())?;
        let mut content_type = false;
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("header {h:?}: expected `Name: value`"))?;
            content_type |= name.trim().eq_ignore_ascii_case("content-type");
            request = request
                .header(name.trim(), value.trim())
                .map_err(|e| e.to_string())?;
        }
        if self.body.is_some() && !content_type {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .map_err(|e| e.to_string())?;
        }
        let mut spec = LoadSpec::new(target)
            .request(request)
            .keep_alive(!self.no_keep_alive)
            .max_requests(self.requests)
            .max_duration(self.duration)
            .timeout(self.timeout)
            .ramp_up(self.ramp_up)
            .per_source(self.per_source);
        for ip in &self.allow_targets {
            spec = spec.allow_target(*ip);
        }
        let connections = self.connections as usize;
        spec = match self.rate {
            Some(rate) => spec.open(rate, connections),
            None => spec.closed(connections),
        };
        if let Some(cidr) = &self.source_cidr {
            spec = spec.sources(Sources::parse_cidr(cidr).map_err(|e| e.to_string())?);
        } else if !self.sources.is_empty() {
            spec = spec.sources(Sources::List(self.sources.clone()));
        }
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The threads to run on.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }

    /// Runs the load on its own threads until its bounds or `cancel`. Blocking: call it outside
    /// an async runtime, or on `spawn_blocking`.
    pub fn run(&self, spec: LoadSpec, cancel: CancellationToken) -> Result<LoadReport, String> {
        run_load_on_threads(spec, self.threads(), cancel).map_err(|e| e.to_string())
    }

    /// The report as the user asked for it: the summary, or JSON.
    pub fn render(&self, report: &LoadReport) -> String {
        if self.json {
            format!("{}\n", report.to_json())
        } else {
            report.summary()
        }
    }
}
