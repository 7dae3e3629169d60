//! `relapse-db-proxy --protocol postgres|mysql --listen ADDR --upstream ADDR`: a pass-through
//! db_proxy for benchmarks and manual tests. Prints `listening on ADDR` as its first line and
//! runs until SIGTERM, SIGINT or end of stdin.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use relapse_dbproxy::{DbProxy, ProxyConfig};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str =
    "usage: relapse-db-proxy --protocol postgres|mysql --listen ADDR --upstream ADDR";

fn parse(mut args: impl Iterator<Item = String>) -> Result<ProxyConfig, String> {
    let (mut protocol, mut listen, mut upstream) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--protocol" => protocol = Some(value.parse()?),
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                )
            }
            "--upstream" => {
                upstream = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--upstream {value}: {e}"))?,
                )
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(ProxyConfig {
        protocol: protocol.ok_or("--protocol is required")?,
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
    })
}

fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relapse-db-proxy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relapse-db-proxy: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config));
    // The stdin reader is a blocking thread that may never return; don't wait for it.
    runtime.shutdown_background();
    code
}

async fn run(config: ProxyConfig) -> ExitCode {
    let proxy = match DbProxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relapse-db-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", proxy.local_addr());
    let _ = std::io::stdout().flush();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("relapse-db-proxy: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = stdin_closed() => {}
    }
    let clean = proxy.shutdown(Duration::from_secs(2)).await;
    let stats = proxy.stats();
    eprintln!(
        "relapse-db-proxy: {} connections, {} statements{}",
        stats.accepted,
        stats.statements,
        if clean {
            ""
        } else {
            "; some connections outlived the grace period"
        }
    );
    ExitCode::SUCCESS
}

async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
