//! A thin standalone CLI over `relapse_flood::run_load`, for benchmarks and quick floods of
//! loopback targets.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use relapse_flood::{run_load_on_threads, LoadSpec, RequestTemplate, Sources};
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
#[command(about = "Send HTTP/1.1 load at a loopback target and report rps and latency")]
struct Args {
    /// http://IP:PORT/PATH (loopback unless --allow-target names it).
    url: String,
    /// Connections (closed model), or the most requests in flight (open model).
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// How long to run at most.
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests to send at most.
    #[arg(short = 'n', long, default_value_t = u64::MAX)]
    requests: u64,
    /// Open model at this many requests per second; without it, the closed model.
    #[arg(long)]
    rate: Option<f64>,
    /// Ramp the open model's rate up from 0 over this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    ramp_up: Duration,
    /// Threads, each with its own runtime and share of the connections.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Source addresses, e.g. 127.9.0.0/24, round-robin per connection.
    #[arg(long)]
    source_cidr: Option<String>,
    /// One connection per request instead of keep-alive.
    #[arg(long)]
    no_keep_alive: bool,
    /// Request method: GET, or POST with --body.
    #[arg(long)]
    body: Option<String>,
    /// Extra header, `Name: value` (placeholders allowed); repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Count per source address.
    #[arg(long)]
    per_source: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn spec(args: &Args) -> Result<LoadSpec, String> {
    let (target, path) = LoadSpec::parse_url(&args.url).map_err(|e| e.to_string())?;
    let mut request = match &args.body {
        Some(body) => RequestTemplate::post_form(&path, body),
        None => RequestTemplate::get(&path),
    }
    .map_err(|e| e.to_string())?;
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?}: expected `Name: value`"))?;
        request = request
            .header(name.trim(), value.trim())
            .map_err(|e| e.to_string())?;
    }
    let mut spec = LoadSpec::new(target)
        .request(request)
        .keep_alive(!args.no_keep_alive)
        .max_requests(args.requests)
        .max_duration(args.duration)
        .timeout(args.timeout)
        .ramp_up(args.ramp_up)
        .per_source(args.per_source);
    spec = match args.rate {
        Some(rate) => spec.open(rate, args.connections),
        None => spec.closed(args.connections),
    };
    if let Some(cidr) = &args.source_cidr {
        spec = spec.sources(Sources::parse_cidr(cidr).map_err(|e| e.to_string())?);
    }
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let spec = match spec(&args) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("relapse-flood: {e}");
            return ExitCode::from(2);
        }
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    // A small runtime of its own waits for ^C; the load runs on its own threads.
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    on_signal.cancel();
                }
            });
        }
    });
    let report = run_load_on_threads(spec, args.threads.max(1), cancel);
    match report {
        Ok(report) if args.json => {
            println!("{}", report.to_json());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relapse-flood: {e}");
            ExitCode::from(2)
        }
    }
}
