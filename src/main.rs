//! `relapse`: parse arguments, call into the library, print, and exit with the code a CI job
//! acts on (0 pass, 1 a gate failed, 2 invalid input, 3 inconclusive or aborted).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use relapse::cli::{AgentCommand, Cli, Command, ReportArgs, RunArgs};
use relapse::export::pushgateway::Pushgateway;
use relapse::harness::{run_scenario, StartError};
use relapse::{baseline, exit, render, setup};
use relapse_core::report::RunReport;
use tokio_util::sync::CancellationToken;

/// Warnings, but not fuser's: the fs_gate daemon answers the xattr calls it does not implement
/// with ENOSYS, and fuser warns about each, and about its own unmount racing relapse's.
const DEFAULT_LOG: &str = "warn,fuser=error";

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAPSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        // The guardian runs before any runtime exists: it blocks terminal signals, and a signal
        // mask is per thread, so it must be set while the process has only this one.
        Command::Guardian { run_dir } => {
            let (code, lines) = relapse::safety::guardian_main(&run_dir);
            lines.iter().for_each(|line| eprintln!("{line}"));
            code
        }
        // A helper may enter a namespace for the whole process: it too must still be one thread.
        Command::Helper { kind, args } => match relapse::kinds::run_helper(&kind, &args) {
            Ok(()) => exit::PASS,
            Err(e) => {
                eprintln!("relapse {kind} helper: {e}");
                exit::INCONCLUSIVE
            }
        },
        // A flood runs on threads of its own, each with its own runtime, as wrk does.
        Command::Flood(command) => {
            let outcome = match &command.agents {
                None => relapse_flood::cli::run_standalone(&command.flood),
                Some(agents) => relapse::flood_agents::run(&command.flood, agents),
            };
            if let Some(report) = outcome.report() {
                print!("{report}");
            }
            if let Some(error) = outcome.error() {
                eprintln!("error: {error}");
            }
            outcome.exit_code()
        }
        Command::Agent {
            command: AgentCommand::Certs { out, agents },
        } => match relapse::agent::certs(&out, &agents) {
            Ok(lines) => print_out(&lines),
            Err(relapse::agent::CertsError::Input(message)) => {
                eprintln!("error: {message}");
                exit::INVALID_INPUT
            }
            Err(relapse::agent::CertsError::Failed(message)) => {
                eprintln!("error: {message}");
                exit::INCONCLUSIVE
            }
        },
        Command::List => print_out(&render::list()),
        Command::Report(args) => report(&args),
        Command::Schema => print_out(&(relapse_core::scenario::json_schema_text() + "\n")),
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run_async(command)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                exit::INCONCLUSIVE
            }
        },
    };
    ExitCode::from(code)
}

/// The commands that run in the async runtime.
async fn run_async(command: Command) -> u8 {
    match command {
        Command::Run(args) => run(&args).await,
        Command::Validate {
            files,
            allow_targets,
        } => validate(&files, &allow_targets),
        Command::Cleanup {
            agent: Some(agent),
            scenario: Some(scenario),
            force,
            ..
        } => cleanup_agent(&agent, &scenario, force).await,
        Command::Cleanup {
            state_dir, force, ..
        } => cleanup(
            &state_dir.unwrap_or_else(relapse_journal::default_state_dir),
            force,
        ),
        Command::Demo {
            sink,
            monitor_interval_ms,
        } => demo(sink, monitor_interval_ms).await,
        Command::Agent {
            command: AgentCommand::Serve(args),
        } => {
            let options = relapse::agent::ServeOptions {
                listen: args.listen,
                cert: args.cert,
                key: args.key,
                token_file: args.token_file,
                allow: relapse::agent::host::Allowlist {
                    kinds: args.allow_kinds,
                    hosts: args.allow_targets,
                },
                state_dir: args
                    .state_dir
                    .unwrap_or_else(relapse_journal::default_state_dir),
            };
            // The one line a supervisor or a test waits for.
            let ready = |address| {
                use std::io::Write;
                println!("listening on {address}");
                let _ = std::io::stdout().flush();
            };
            match relapse::agent::serve(&options, cancel_on_signals(), ready).await {
                Ok(()) => exit::PASS,
                Err(relapse::agent::ServeError::Input(message)) => {
                    eprintln!("error: {message}");
                    exit::INVALID_INPUT
                }
                Err(relapse::agent::ServeError::Failed(message)) => {
                    eprintln!("error: {message}; nothing was applied");
                    exit::INCONCLUSIVE
                }
            }
        }
        Command::DemoChild { args } => match relapse_demo::run_child(&args).await {
            Ok(()) => exit::PASS,
            Err(e) => {
                eprintln!("error: demo child: {e}");
                exit::INCONCLUSIVE
            }
        },
        _ => unreachable!("main runs the other commands without the runtime"),
    }
}

/// The scenarios, or every file's error printed.
fn load_all(
    files: &[PathBuf],
    allow_targets: &[String],
) -> Option<Vec<relapse_core::scenario::Scenario>> {
    setup::load_all(files, allow_targets)
        .map_err(|errors| errors.iter().for_each(|e| eprintln!("error: {e}")))
        .ok()
}

fn validate(files: &[PathBuf], allow_targets: &[String]) -> u8 {
    let Some(scenarios) = load_all(files, allow_targets) else {
        return exit::INVALID_INPUT;
    };
    for (file, s) in files.iter().zip(&scenarios) {
        println!("{}", render::validated(file, s));
    }
    exit::PASS
}

fn cleanup(state_dir: &Path, force: bool) -> u8 {
    let cleaned = match relapse::safety::cleanup(state_dir, force) {
        Ok(cleaned) => cleaned,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INCONCLUSIVE;
        }
    };
    print!("{}", render::cleanup_report(&cleaned, state_dir));
    if cleaned
        .iter()
        .flat_map(|run| &run.reverts)
        .any(|(_, _, result)| result.is_err())
    {
        exit::INCONCLUSIVE
    } else {
        exit::PASS
    }
}

/// `relapse cleanup --agent NAME --scenario FILE`: what the agent held, and what was reverted.
async fn cleanup_agent(name: &str, scenario: &Path, force: bool) -> u8 {
    let scenario = match relapse_core::scenario::load(scenario) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let Some(spec) = scenario.agents.iter().find(|a| a.name == name) else {
        let known: Vec<&str> = scenario.agents.iter().map(|a| a.name.as_str()).collect();
        eprintln!(
            "error: --agent {name}: the scenario has no such [[agent]] (it has: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return exit::INVALID_INPUT;
    };
    match relapse::remote::cleanup(spec, force).await {
        Ok(answer) => {
            for line in &answer.reverted {
                println!("reverted  {line}");
            }
            for line in &answer.failed {
                println!("FAILED    {line}");
            }
            if let Some(run) = &answer.kept {
                println!(
                    "kept      run {run}: it holds the agent's lease (its coordinator is alive); --force reverts it"
                );
            }
            if answer.reverted.is_empty() && answer.failed.is_empty() && answer.kept.is_none() {
                println!("agent {name} ({}) holds nothing", spec.url);
            }
            if answer.failed.is_empty() {
                exit::PASS
            } else {
                exit::INCONCLUSIVE
            }
        }
        Err(e) => {
            eprintln!("error: agent {name}: {e}");
            exit::INCONCLUSIVE
        }
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

async fn run(options: &RunArgs) -> u8 {
    let files = &options.files;
    let state_dir = (options.state_dir.clone()).unwrap_or_else(relapse_journal::default_state_dir);
    // Checked with the scenarios, before anything runs: a refused URL is invalid input.
    let pushgateway = (options.pushgateway.as_deref())
        .map(|url| Pushgateway::new(url, &options.allow_targets))
        .transpose();
    let scenarios = load_all(files, &options.allow_targets);
    let pushgateway = match pushgateway {
        Ok(pushgateway) => pushgateway,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let Some(scenarios) = scenarios else {
        return exit::INVALID_INPUT;
    };
    let location = |arg: &String| baseline::Location::parse(arg, &state_dir);
    let save_to = options.save_baseline.as_ref().map(location);
    let compare_with = options.baseline.as_ref().map(location);
    // Checked and read before anything runs: a missing baseline must not cost the runs.
    let baselines = match (save_to.iter().chain(&compare_with))
        .try_for_each(|l| setup::check_baseline_location(l, &scenarios))
        .and_then(|()| {
            (compare_with.as_ref())
                .map(|l| setup::load_baselines(l, &scenarios))
                .transpose()
        }) {
        Ok(baselines) => baselines,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::INVALID_INPUT;
        }
    };
    let launcher = match setup::launcher() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::INCONCLUSIVE;
        }
    };
    let (journal, mut guardian) = match setup::start_safety(&state_dir) {
        Ok(safety) => safety,
        Err(e) => {
            eprintln!("error: {e:#}; nothing was injected");
            return exit::INCONCLUSIVE;
        }
    };
    let cancel = cancel_on_signals();
    let mut reports: Vec<RunReport> = Vec::new();
    // The index of each report's scenario, to group the runs into series.
    let mut file_of: Vec<usize> = Vec::new();
    let mut start_error = None;
    'runs: for (index, (file, scenario)) in files.iter().zip(&scenarios).enumerate() {
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
            let journal = Some(journal.clone());
            let result =
                run_scenario(scenario, file, &launcher, journal, cancel.clone(), Some(tx)).await;
            let _ = display.await;
            match result {
                Ok(report) => {
                    if options.quiet {
                        println!("{}", render::verdict_line(&report));
                    } else {
                        println!("{}", render::summary(&report));
                    }
                    reports.push(report);
                    file_of.push(index);
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
        print!("{}", render::spread(&reports));
    }
    let series = if save_to.is_some() || baselines.is_some() {
        match setup::series_of_runs(&scenarios, files, &reports, &file_of) {
            Ok(series) => series,
            Err(e) => {
                eprintln!("error: {e:#}");
                return exit::INCONCLUSIVE;
            }
        }
    } else {
        Vec::new()
    };
    let comparison = baselines.map(|baselines| {
        let settings = relapse_core::compare::Settings {
            noise: options.noise / 100.0,
            significance: options.significance,
        };
        relapse_core::compare::Comparison {
            baseline: options.baseline.clone().unwrap_or_default(),
            settings,
            scenarios: (baselines.iter().zip(&series))
                .map(|(b, n)| relapse_core::compare::compare_series(b, n, settings))
                .collect(),
        }
    });
    if let Some(comparison) = &comparison {
        print!("{}", render::comparison(comparison));
    }
    let mut saved = Ok(());
    if let Some(location) = &save_to {
        for s in &series {
            let path = location.path_for(&s.key.scenario);
            if s.runs == 0 {
                // An inconclusive or aborted run measured nothing comparable; an older
                // baseline is better kept than replaced by an empty one.
                eprintln!(
                    "relapse: baseline {:?} of {} not saved: no run completed",
                    location.name(),
                    s.key.scenario
                );
                continue;
            }
            saved = saved.and(baseline::save(&path, &location.name(), s));
            if saved.is_ok() {
                println!(
                    "baseline {:?} of {}: {} run{} saved to {}",
                    location.name(),
                    s.key.scenario,
                    s.runs,
                    if s.runs == 1 { "" } else { "s" },
                    path.display()
                );
            }
        }
    }
    let paths = setup::ReportPaths {
        json: options.json.as_deref(),
        junit: options.junit.as_deref(),
        markdown: options.markdown.as_deref(),
        html: options.html.as_deref(),
    };
    // The files first: they are local and quick, and a Pushgateway that does not answer must
    // not keep them from being written.
    let written = setup::write_reports(&reports, comparison.as_ref(), paths);
    let mut pushed = true;
    if let Some(pushgateway) = pushgateway.filter(|_| !reports.is_empty()) {
        for failure in pushgateway.push(&reports).await {
            eprintln!("error: {failure}");
            pushed = false;
        }
    }
    if let Err(e) = written.and(saved) {
        eprintln!("error: {e:#}");
        return exit::INCONCLUSIVE;
    }
    let code = start_error.unwrap_or_else(|| relapse::exit_code(&reports, comparison.as_ref()));
    relapse::exit_code_after_push(code, pushed)
}

/// `relapse report`: JSON reports in, the page and the table out. Exit 2 for a file that is not
/// a relapse report, 3 when an output cannot be written.
fn report(args: &ReportArgs) -> u8 {
    let reports = match setup::read_reports(&args.files) {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let paths = setup::ReportPaths {
        html: args.html.as_deref(),
        markdown: args.markdown.as_deref(),
        ..setup::ReportPaths::default()
    };
    match setup::write_reports(&reports, None, paths) {
        Ok(()) => exit::PASS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::INCONCLUSIVE
        }
    }
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
            bar.set_message(render::progress_line(&scenario, &p));
        }
        bar.finish_and_clear();
    })
}

async fn demo(sink: Option<String>, monitor_interval_ms: u64) -> u8 {
    let launcher = match setup::launcher() {
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

/// Writes `text` to stdout; a reader that went away (`relapse schema | head`) is not an error.
fn print_out(text: &str) -> u8 {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: writing to stdout: {e}");
            exit::INCONCLUSIVE
        }
        _ => exit::PASS,
    }
}
