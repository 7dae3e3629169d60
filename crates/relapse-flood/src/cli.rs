//! The command line of a standalone flood, shared by `relapse flood` and the `relapse-flood`
//! bench binary: one definition of the flags, one way to build the spec, run it and render the
//! report ([`run_standalone`]), one set of exit codes ([`exit`]). The binaries only print.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::template::Prepared;
use crate::{run_load_on_threads, LoadReport, LoadSpec, RequestTemplate, Sources, SourcesExt};

/// The exit codes of a standalone flood, the same as relapse's own.
pub mod exit {
    /// The flood ran to its bounds (whatever the target answered).
    pub const COMPLETED: u8 = 0;
    /// Bad input: the spec could not be built; nothing was sent.
    pub const BAD_INPUT: u8 = 2;
    /// Interrupted (Ctrl-C, SIGTERM) or failed at run time.
    pub const INTERRUPTED_OR_FAILED: u8 = 3;
}

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
    #[arg(short = 'n', long, default_value_t = crate::MAX_REQUESTS, value_parser = clap::value_parser!(u64).range(1..=crate::MAX_REQUESTS))]
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
        // The request's constant parts are checked when the load starts; check them now, so a
        // bad path or header is bad input, not a failure at run time.
        Prepared::new(&spec.request, &spec.target.to_string(), spec.keep_alive)
            .map_err(|e| e.to_string())?;
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

/// What a standalone flood came to. The report is rendered as the flags asked (summary or
/// JSON); the caller prints it on stdout and an error on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The flood ran to its bounds: the report.
    Completed { report: String },
    /// Ctrl-C or SIGTERM stopped it early: the report of what was sent until then.
    Interrupted { report: String },
    /// The spec could not be built; nothing was sent.
    BadInput { error: String },
    /// The load failed at run time (e.g. its threads or runtimes could not start).
    Failed { error: String },
}

impl Outcome {
    /// The process's exit code, as [`exit`] fixes it.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Completed { .. } => exit::COMPLETED,
            Outcome::BadInput { .. } => exit::BAD_INPUT,
            Outcome::Interrupted { .. } | Outcome::Failed { .. } => exit::INTERRUPTED_OR_FAILED,
        }
    }

    /// What goes on stdout: the report, if there is one.
    pub fn report(&self) -> Option<&str> {
        match self {
            Outcome::Completed { report } | Outcome::Interrupted { report } => Some(report),
            Outcome::BadInput { .. } | Outcome::Failed { .. } => None,
        }
    }

    /// What goes on stderr: the error, if there is one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::BadInput { error } | Outcome::Failed { error } => Some(error),
            Outcome::Completed { .. } | Outcome::Interrupted { .. } => None,
        }
    }
}

/// A whole standalone flood, as `relapse flood` and `relapse-flood` run it: builds the spec,
/// stops early on Ctrl-C or SIGTERM (keeping the report of what was sent), runs the load on its
/// own threads and renders the report. Blocking; call it outside an async runtime.
///
/// It takes over SIGINT and SIGTERM for the rest of the process (the handlers are installed
/// before the first request, so a signal once the flood is under way never kills the process
/// without a report); if they cannot be installed, the flood runs all the same, bounded by its
/// flags, and a signal ends the process as it would by default.
pub fn run_standalone(args: &FloodArgs) -> Outcome {
    let spec = match args.spec() {
        Ok(spec) => spec,
        Err(error) => return Outcome::BadInput { error },
    };
    let cancel = CancellationToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let done = CancellationToken::new();
    let watcher = watch_signals(cancel.clone(), interrupted.clone(), done.clone());
    let result = args.run(spec, cancel);
    done.cancel();
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    match result {
        Ok(report) if interrupted.load(Ordering::SeqCst) => Outcome::Interrupted {
            report: args.render(&report),
        },
        Ok(report) => Outcome::Completed {
            report: args.render(&report),
        },
        Err(error) => Outcome::Failed { error },
    }
}

/// A thread with a small runtime of its own that cancels `cancel` (and sets `interrupted`) on
/// Ctrl-C or SIGTERM, until `done`. Returns once the handlers are installed; `None` if they
/// could not be.
fn watch_signals(
    cancel: CancellationToken,
    interrupted: Arc<AtomicBool>,
    done: CancellationToken,
) -> Option<std::thread::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (ready, installed) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("flood-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async {
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(int), Ok(term)) => (int, term),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = done.cancelled() => return,
                }
                interrupted.store(true, Ordering::SeqCst);
                cancel.cancel();
            });
        });
    let handle = match spawned {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!("flood: no signal handling (cannot start its thread: {e})");
            return None;
        }
    };
    match installed.recv() {
        Ok(Ok(())) => Some(handle),
        Ok(Err(e)) => {
            tracing::warn!("flood: no signal handling ({e}); Ctrl-C ends it without a report");
            let _ = handle.join();
            None
        }
        Err(_) => {
            let _ = handle.join();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FloodArgs,
    }

    fn args(argv: &[&str]) -> FloodArgs {
        Cli::parse_from(std::iter::once("flood").chain(argv.iter().copied())).args
    }

    #[test]
    fn each_outcome_has_its_exit_code_and_its_stream() {
        let report = || "1 sent\n".to_string();
        let error = || "boom".to_string();
        let cases = [
            (Outcome::Completed { report: report() }, 0, true),
            (Outcome::Interrupted { report: report() }, 3, true),
            (Outcome::BadInput { error: error() }, 2, false),
            (Outcome::Failed { error: error() }, 3, false),
        ];
        for (outcome, code, has_report) in cases {
            assert_eq!(outcome.exit_code(), code, "{outcome:?}");
            assert_eq!(outcome.report().is_some(), has_report, "{outcome:?}");
            assert_eq!(outcome.error().is_some(), !has_report, "{outcome:?}");
        }
    }

    #[test]
    fn a_request_that_cannot_go_on_the_wire_is_bad_input_before_any_traffic() {
        for argv in [
            &["http://127.0.0.1:1/a b", "-d", "1s", "-n", "1"][..],
            &[
                "http://127.0.0.1:1/",
                "-H",
                "x: a\u{1}b",
                "-d",
                "1s",
                "-n",
                "1",
            ],
            &["http://10.0.0.1:1/", "-d", "1s", "-n", "1"],
        ] {
            let outcome = run_standalone(&args(argv));
            assert!(
                matches!(outcome, Outcome::BadInput { .. }),
                "{argv:?}: {outcome:?}"
            );
        }
    }
}
