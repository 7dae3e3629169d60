//! `relapse`: parse arguments, load scenarios, run them, report, and exit with the code a CI job
//! acts on (0 pass, 1 a gate failed, 2 invalid input, 3 inconclusive or aborted).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use relapse::exit;
use relapse::harness::{run_scenario, StartError};
use relapse::safety::{Guardian, JournalLog};
use relapse_core::report::file::ReportFile;
use relapse_core::report::RunReport;
use relapse_core::scenario::{self, Scenario};
use relapse_demo::Launcher;
use relapse_journal::Journal;
use tokio_util::sync::CancellationToken;

/// Reproduce the failure modes of real outages against a system and measure how long it takes
/// to detect them and to recover.
#[derive(Parser)]
#[command(name = "relapse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios end to end: steady state, faults, observation, verdict.
    Run {
        /// Scenario files (TOML; see docs/scenario-format.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the JSON report here.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Write a JUnit XML report here (one test suite per run, one test case per gate).
        #[arg(long, value_name = "PATH")]
        junit: Option<PathBuf>,
        /// Run each scenario this many times and summarise the spread of the measured times.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
        /// Print only the verdict lines, not the full summaries.
        #[arg(long, short)]
        quiet: bool,
        /// Also allow probes and detection sources to reach HOST (by default only loopback).
        #[arg(long = "allow-target", value_name = "HOST")]
        allow_targets: Vec<String>,
        /// Where the revert journal lives [default: $RELAPSE_STATE_DIR, else
        /// $XDG_STATE_HOME/relapse, else ~/.local/state/relapse].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check scenario files without running anything.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also allow probes and detection sources to reach HOST (by default only loopback).
        #[arg(long = "allow-target", value_name = "HOST")]
        allow_targets: Vec<String>,
    },
    /// Revert every fault that a journal says is still applied (left by a relapse that died).
    /// Runs whose relapse is still alive are left alone unless --force.
    Cleanup {
        /// The state directory holding the journals [default: as for `run`].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Also revert the faults of runs whose relapse process is still alive.
        #[arg(long)]
        force: bool,
    },
    /// Flood an HTTP target on its own, like wrk or oha: open or closed model, many source
    /// addresses; prints rps, latency percentiles, statuses and errors. Bounded by --duration
    /// and --requests; loopback only unless --allow-target.
    Flood(relapse_flood::cli::FloodArgs),
    /// List the fault kinds, probe kinds and detection sources, with one line of help each.
    List,
    /// Run the embedded demo target (hosted-mail stack) until Ctrl-C.
    Demo {
        /// Where the demo's monitor POSTs its Alertmanager (v4) webhooks.
        #[arg(long, value_name = "URL")]
        sink: Option<String>,
        /// Milliseconds between the monitor's health checks.
        #[arg(long, default_value_t = 500, value_name = "MS")]
        monitor_interval_ms: u64,
    },
    /// Internal: a process holding reserved ports for port_exhaustion.
    #[command(name = "__hold-ports", hide = true)]
    HoldPorts {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Internal: the guardian of a run's journal.
    #[command(name = "__guardian", hide = true)]
    Guardian { run_dir: PathBuf },
    /// Internal: a demo child process (backend or frontend).
    #[command(name = "__demo-child", hide = true)]
    DemoChild {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAPSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The guardian runs before any runtime exists: it blocks terminal signals, and a signal mask
    // is per thread, so it must be set while the process has only this one.
    if let Command::Guardian { run_dir } = &cli.command {
        return ExitCode::from(relapse::safety::guardian_main(run_dir));
    }
    // A port holder enters a namespace for the whole process: it too must still be one thread.
    if let Command::HoldPorts { args } = &cli.command {
        return match relapse_ports::ports::holder_main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relapse port holder: {e}");
                ExitCode::from(exit::INCONCLUSIVE)
            }
        };
    }
    // A flood runs on threads of its own, each with its own runtime, as wrk does.
    if let Command::Flood(args) = &cli.command {
        return ExitCode::from(flood(args));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INCONCLUSIVE);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run {
                files,
                json,
                junit,
                repeat,
                quiet,
                allow_targets,
                state_dir,
            } => {
                let options = RunOptions {
                    json,
                    junit,
                    repeat,
                    quiet,
                    allow_targets,
                    state_dir: state_dir.unwrap_or_else(relapse_journal::default_state_dir),
                };
                run(&files, &options).await
            }
            Command::Validate {
                files,
                allow_targets,
            } => validate(&files, &allow_targets),
            Command::Cleanup { state_dir, force } => cleanup(
                &state_dir.unwrap_or_else(relapse_journal::default_state_dir),
                force,
            ),
            Command::Guardian { .. } | Command::HoldPorts { .. } | Command::Flood(_) => {
                unreachable!("returned before the runtime started")
            }
            Command::List => {
                print!("{}", LIST);
                exit::PASS
            }
            Command::Demo {
                sink,
                monitor_interval_ms,
            } => demo(sink, monitor_interval_ms).await,
            Command::DemoChild { args } => match relapse_demo::run_child(&args).await {
                Ok(()) => exit::PASS,
                Err(e) => {
                    eprintln!("error: demo child: {e}");
                    exit::INCONCLUSIVE
                }
            },
        }
    });
    ExitCode::from(code)
}

/// `relapse flood`: exit 0 when the flood ran to its bounds, 2 on bad input, 3 when
/// interrupted (the report of what was sent is still printed).
fn flood(args: &relapse_flood::cli::FloodArgs) -> u8 {
    let spec = match args.spec() {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let cancel = CancellationToken::new();
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let interrupted = interrupted.clone();
        // A small runtime of its own waits for Ctrl-C or SIGTERM; the load has its own threads.
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                cancel.cancel();
            });
        });
    }
    match args.run(spec, cancel) {
        Ok(report) => {
            print!("{}", args.render(&report));
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                exit::INCONCLUSIVE
            } else {
                exit::PASS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID_INPUT
        }
    }
}

const LIST: &str = "\
fault kinds
  process_freeze    stop a process (or its process group) with SIGSTOP, resume with SIGCONT
                    (the FLG incident: a healthcheck script hung the database server)
  port_exhaustion   take a network namespace's ephemeral ports: reserve (bind), leak (hold
                    connections) or time_wait (churn) (the iPaper incident)
  fd_exhaustion     lower a process's RLIMIT_NOFILE to what it uses, so it can open nothing new
  db_lock           hold a real lock on PostgreSQL or MySQL/MariaDB: a table, rows, or the
                    global read lock (the Kolab incident)
  http_flood        an HTTP request flood: open model (a rate) or closed (connections), from
                    many loopback source addresses (the OpenSRS incident)
  slowloris         connections that send headers slowly and never finish them
  connection_flood  connections opened and held idle
  db_proxy          switch a [[db_proxy]] (a PostgreSQL / MySQL aware proxy the target talks
                    through) to stall, stall_writes, latency, error (SQLSTATE / MySQL error),
                    reset or refuse_new

probe kinds (the SLI: what users feel)
  http              an HTTP/1.1 request; success = status in `expect`, within `timeout`
  tcp               a TCP connect within `timeout`

detection sources (how relapse learns that the system noticed)
  webhook           an alert POSTed to relapse's sink ({sink.url}); Alertmanager v4 or plain
                    JSON, matched by labels
  http              a health endpoint answering a status outside `healthy`, or not answering
  command           a command exiting non-zero (a Nagios-style check)
  log               a line appended to a file matching a regular expression

backlog gauges ([backlog]: recovery also waits for it to drain)
  metric            a metric in Prometheus text format (summed over its label sets)
  sql               the first column of a query's first row (PostgreSQL or MySQL/MariaDB)
";

fn launcher() -> anyhow::Result<Launcher> {
    let program =
        std::env::current_exe().context("cannot find the relapse executable to start the demo")?;
    Ok(Launcher {
        program,
        args: vec!["__demo-child".into()],
    })
}

fn load_all(files: &[PathBuf], allow_targets: &[String]) -> Result<Vec<Scenario>, ()> {
    let mut scenarios = Vec::new();
    let mut failed = false;
    for file in files {
        match scenario::load_allowing(file, allow_targets) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        Err(())
    } else {
        Ok(scenarios)
    }
}

fn validate(files: &[PathBuf], allow_targets: &[String]) -> u8 {
    match load_all(files, allow_targets) {
        Err(()) => exit::INVALID_INPUT,
        Ok(scenarios) => {
            for (file, s) in files.iter().zip(&scenarios) {
                println!(
                    "ok: {} ({}: {} probe{}, {} detection source{}, {} fault{})",
                    file.display(),
                    s.name,
                    s.probes.len(),
                    plural(s.probes.len()),
                    s.detectors.len(),
                    plural(s.detectors.len()),
                    s.faults.len(),
                    plural(s.faults.len())
                );
            }
            exit::PASS
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Ctrl-C and SIGTERM cancel the run (faults are reverted, a partial report is written). Further
/// signals are noted and otherwise ignored, so a second Ctrl-C cannot interrupt the revert.
fn cancel_on_signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if token.is_cancelled() {
                eprintln!("relapse: already stopping; reverting faults before exit");
            } else {
                eprintln!("relapse: stopping: reverting faults and writing the partial report");
                token.cancel();
            }
        }
    });
    cancel
}

struct RunOptions {
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    repeat: u32,
    quiet: bool,
    allow_targets: Vec<String>,
    state_dir: PathBuf,
}

/// The journal and its guardian for one `relapse run`, set up before anything is injected.
fn start_safety(state_dir: &Path) -> anyhow::Result<(JournalLog, Guardian)> {
    let context = || {
        format!(
            "cannot create the revert journal under {} (set --state-dir or RELAPSE_STATE_DIR)",
            state_dir.display()
        )
    };
    let dir = Journal::next_dir(state_dir).with_context(context)?;
    let program = std::env::current_exe()
        .context("cannot find the relapse executable to start the guardian")?;
    // The guardian first, the run directory second: a relapse killed between the two then
    // leaves nothing behind, since the guardian removes the directory (or finds none) on EOF.
    let guardian = Guardian::spawn(&program, &["__guardian".to_string()], &dir)
        .context("cannot start the guardian process")?;
    let journal = Journal::create_at(&dir).with_context(context)?;
    Ok((JournalLog::new(journal), guardian))
}

async fn run(files: &[PathBuf], options: &RunOptions) -> u8 {
    let Ok(scenarios) = load_all(files, &options.allow_targets) else {
        return exit::INVALID_INPUT;
    };
    let launcher = match launcher() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::INCONCLUSIVE;
        }
    };
    let (journal, mut guardian) = match start_safety(&options.state_dir) {
        Ok(safety) => safety,
        Err(e) => {
            eprintln!("error: {e:#}; nothing was injected");
            return exit::INCONCLUSIVE;
        }
    };
    let cancel = cancel_on_signals();
    let mut reports: Vec<RunReport> = Vec::new();
    let mut start_error = None;
    'runs: for (file, scenario) in files.iter().zip(&scenarios) {
        for _ in 0..options.repeat {
            if cancel.is_cancelled() {
                break 'runs;
            }
            if !guardian.is_alive() {
                eprintln!(
                    "error: the guardian process (pid {}) has died; not starting another run",
                    guardian.pid()
                );
                start_error = Some(exit::INCONCLUSIVE);
                break 'runs;
            }
            let (tx, rx) = tokio::sync::watch::channel(Default::default());
            let display = spawn_progress(scenario.name.clone(), rx);
            let result = run_scenario(
                scenario,
                file,
                &launcher,
                Some(journal.clone()),
                cancel.clone(),
                Some(tx),
            )
            .await;
            let _ = display.await;
            match result {
                Ok(report) => {
                    if options.quiet {
                        println!("{}: {}", report.scenario, report.verdict.as_str());
                    } else {
                        println!("{}", relapse::render::summary(&report));
                    }
                    reports.push(report);
                }
                Err(e) => {
                    eprintln!("error: {e}; nothing was injected");
                    start_error = Some(match e {
                        StartError::Invalid { .. } => exit::INVALID_INPUT,
                        StartError::Harness { .. } => exit::INCONCLUSIVE,
                    });
                    break 'runs;
                }
            }
        }
    }
    // Every fault is reverted by now; the guardian clears the journal's run directory and exits.
    guardian.finish(Duration::from_secs(5));
    if options.repeat > 1 {
        print!("{}", spread(&reports));
    }
    if let Err(e) = write_reports(&reports, options.json.as_deref(), options.junit.as_deref()) {
        eprintln!("error: {e:#}");
        return exit::INCONCLUSIVE;
    }
    start_error.unwrap_or_else(|| relapse::exit_code(&reports))
}

fn cleanup(state_dir: &Path, force: bool) -> u8 {
    let cleaned = match relapse::safety::cleanup(state_dir, force) {
        Ok(cleaned) => cleaned,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INCONCLUSIVE;
        }
    };
    let mut failed = false;
    let mut reverted = 0;
    for run in &cleaned {
        if let Some(pid) = run.skipped_live_owner {
            println!("left alone: {} (its relapse, pid {pid}, is still running; --force reverts it anyway)", run.run.display());
            continue;
        }
        for (fault, describe, result) in &run.reverts {
            match result {
                Ok(done) => {
                    reverted += 1;
                    println!("reverted: \"{fault}\" ({describe}): {done}");
                }
                Err(e) => {
                    failed = true;
                    println!(
                        "FAILED: \"{fault}\" ({describe}): {e}; the entry stays in {}",
                        run.run.display()
                    );
                }
            }
        }
    }
    println!(
        "cleanup: {reverted} fault{} reverted in {}; nothing else is applied by relapse{}",
        plural(reverted),
        state_dir.display(),
        if failed {
            " except the failures above"
        } else {
            ""
        }
    );
    if failed {
        exit::INCONCLUSIVE
    } else {
        exit::PASS
    }
}

fn write_reports(
    reports: &[RunReport],
    json: Option<&Path>,
    junit: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&ReportFile::new(reports))
            .context("serialising the JSON report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
    }
    if let Some(path) = junit {
        let text = relapse::junit::to_junit(reports).context("serialising the JUnit report")?;
        std::fs::write(path, text)
            .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
    }
    Ok(())
}

/// The live one-line display; drawn only on a terminal (indicatif hides itself otherwise).
fn spawn_progress(
    scenario: String,
    mut rx: tokio::sync::watch::Receiver<relapse_core::engine::Progress>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        while rx.changed().await.is_ok() {
            let p = rx.borrow_and_update().clone();
            bar.set_message(relapse::render::progress_line(&scenario, &p));
        }
        bar.finish_and_clear();
    })
}

/// Min / median / max of each measured time over repeated runs of the same scenario.
fn spread(reports: &[RunReport]) -> String {
    use relapse::render::human;
    let mut out = String::from("\nspread over repeated runs (first episode of each run)\n");
    let mut names: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    names.dedup();
    for name in names {
        let runs: Vec<&RunReport> = reports.iter().filter(|r| r.scenario == name).collect();
        out += &format!(
            "  {name}: {} runs, {} passed\n",
            runs.len(),
            runs.iter()
                .filter(|r| r.verdict == relapse_core::gate::Verdict::Pass)
                .count()
        );
        type Pick = fn(&relapse_core::report::EpisodeReport) -> Option<Duration>;
        let metrics: [(&str, Pick); 4] = [
            ("time to impact", |e| e.time_to_impact),
            ("time to detect", |e| e.time_to_detect),
            ("time to mitigate", |e| e.time_to_mitigate),
            ("time to recover", |e| e.time_to_recover),
        ];
        for (label, pick) in metrics {
            let mut values: Vec<Duration> = runs
                .iter()
                .filter_map(|r| r.headline().and_then(pick))
                .collect();
            values.sort();
            if values.is_empty() {
                out += &format!("    {label:<17} —\n");
            } else {
                out += &format!(
                    "    {label:<17} min {:>9}  median {:>9}  max {:>9}  ({} of {} runs)\n",
                    human(values[0]),
                    human(values[values.len() / 2]),
                    human(values[values.len() - 1]),
                    values.len(),
                    runs.len()
                );
            }
        }
    }
    out
}

async fn demo(sink: Option<String>, monitor_interval_ms: u64) -> u8 {
    let launcher = match launcher() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::INCONCLUSIVE;
        }
    };
    let monitor = relapse_demo::MonitorOptions {
        interval: Duration::from_millis(monitor_interval_ms.max(1)),
        sink_url: sink,
        ..Default::default()
    };
    let options = relapse_demo::DemoOptions {
        monitor: Some(monitor),
        ..relapse_demo::DemoOptions::new(launcher)
    };
    let demo = match relapse_demo::Demo::start(options).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: demo target: {e}");
            return exit::INCONCLUSIVE;
        }
    };
    println!("relapse demo: hosted-mail stack running (Ctrl-C to stop)");
    println!(
        "  frontend  {}  (pid {})  GET / and /health",
        demo.frontend_url(),
        demo.frontend_pid()
    );
    println!(
        "  backend   {}  (pid {})  GET /mailbox and /health",
        demo.backend_url(),
        demo.backend_pid()
    );
    let _ = tokio::signal::ctrl_c().await;
    demo.shutdown().await;
    exit::PASS
}
