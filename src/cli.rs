//! The `relapse` command line: its subcommands and flags. `main.rs` parses them and acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Reproduce the failure modes of real outages against a system and measure how long it takes
/// to detect them and to recover.
#[derive(Parser)]
#[command(name = "relapse", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Run an agent: apply faults on this host for coordinators that present the token, over
    /// TLS with this agent's certificate, each run under a dead-man lease (its faults are
    /// reverted when the coordinator stops renewing it). Prints `listening on ADDR` when ready;
    /// Ctrl-C or SIGTERM reverts what the current run holds and stops.
    Serve(AgentServeArgs),
    /// Make what agents and coordinators authenticate with, in DIR: a certificate authority
    /// (ca.pem, and ca-key.pem to keep safe; both reused when ca-key.pem exists), for each
    /// NAME=ADDRESS a certificate for that address signed by it (NAME.pem, NAME-key.pem), and
    /// a random token (token; kept when it exists). Keys and the token are readable by their
    /// owner only. Coordinators need ca.pem and token; each agent its own pair and token.
    Certs {
        /// The directory to write into (made if absent).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// An agent's name and the address coordinators dial it at (an IP or a DNS name):
        /// `db1=10.0.0.12`.
        #[arg(required = true, value_name = "NAME=ADDRESS")]
        agents: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct AgentServeArgs {
    /// Where to listen: the address coordinators dial, which the certificate names.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// The agent's certificate (PEM), as `relapse agent certs` writes it.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// The agent's key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The file holding the token coordinators must present.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// A fault kind this agent applies; repeat for more. An agent applies no kind it was not
    /// started with, whatever a coordinator asks.
    #[arg(long = "allow-kind", value_name = "KIND", required = true)]
    pub allow_kinds: Vec<String>,
    /// Also let faults target HOST (by default only loopback).
    #[arg(long = "allow-target", value_name = "HOST")]
    pub allow_targets: Vec<String>,
    /// The state directory for the agent's journal [default: as for `run`].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run scenarios end to end: steady state, faults, observation, verdict.
    Run(RunArgs),
    /// Turn JSON reports (`relapse run --json`) into a page to look at (--html) and a summary
    /// table (--markdown). Several files, or a file of several runs, make a series: the runs of
    /// one scenario are compared side by side.
    Report(ReportArgs),
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
        /// Also revert the faults of runs whose relapse process is still alive (with
        /// --agent: of the run that holds the agent's lease, which then ends).
        #[arg(long)]
        force: bool,
        /// Ask the agent of this name (an `[[agent]]` of --scenario) what it still holds, and
        /// revert it, instead of reading this machine's journals.
        #[arg(long, value_name = "NAME", requires = "scenario")]
        agent: Option<String>,
        /// The scenario whose `[[agent]]` --agent names.
        #[arg(long, value_name = "FILE", requires = "agent")]
        scenario: Option<PathBuf>,
    },
    /// Flood an HTTP target on its own, like wrk or oha: open or closed model, many source
    /// addresses; prints rps, latency percentiles, statuses and errors. Bounded by --duration
    /// and --requests; loopback only unless --allow-target.
    Flood(FloodCommand),
    /// relapse agents, which run faults on a target's other hosts for a `relapse run`: their
    /// TLS material, and the agent itself; a scenario names them in `[[agent]]`.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// List the fault kinds, probe kinds and detection sources, with one line of help each.
    List,
    /// Print the JSON Schema (draft 2020-12) of the scenario format, for editors: put
    /// `#:schema ./relapse-scenario.schema.json` at the top of a scenario (taplo, Even Better
    /// TOML) after `relapse schema > relapse-scenario.schema.json`.
    Schema,
    /// Run the embedded demo target (hosted-mail stack) until Ctrl-C.
    Demo {
        /// Where the demo's monitor POSTs its Alertmanager (v4) webhooks.
        #[arg(long, value_name = "URL")]
        sink: Option<String>,
        /// Milliseconds between the monitor's health checks.
        #[arg(long, default_value_t = 500, value_name = "MS")]
        monitor_interval_ms: u64,
    },
    /// Internal: a fault kind's helper process (port_exhaustion's port holder, fs_freeze's thaw
    /// holder), run through the kind table.
    #[command(name = "__helper", hide = true)]
    Helper {
        kind: String,
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

/// The flags of `relapse run`.
#[derive(Args)]
pub struct RunArgs {
    /// Scenario files (TOML; see docs/scenario-format.md).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report here (one test suite per run, one test case per gate).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Append a Markdown summary table to this file (one row per run and episode: outcome, time
    /// to impact, detect, mitigate and recover, failed gates), e.g. "$GITHUB_STEP_SUMMARY". An
    /// existing file is appended to, never replaced, as a CI job summary collects every step's.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
    /// Write a self-contained HTML page of the runs (timelines, gates, the spread of a series;
    /// no script, nothing fetched), as `relapse report --html` does.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// After the runs, push their metrics to the Prometheus Pushgateway at URL (http:// only):
    /// one group per scenario, PUT to URL/metrics/job/relapse/scenario/NAME, replacing what the
    /// last push left there. Loopback only unless --allow-target names the host. A push that
    /// fails (refused, an error status, no answer within 5 s) is reported and turns exit 0 into 3,
    /// so a CI gate cannot lose its metrics unnoticed; exit 1 (a failed gate) stays 1.
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Run each scenario this many times and summarise the spread of the measured times.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Store every episode's raw samples of each measured time as baseline NAME, one file per
    /// scenario under the state directory (<state>/baselines/NAME/<scenario>.json), with what
    /// makes runs comparable (relapse version, scenario name and file hash, probe and detection
    /// intervals) and the machine. A NAME with a `/` in it or ending in `.json` is the file
    /// itself (one scenario only). See docs/baselines.md.
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Compare these runs with baseline NAME (as for --save-baseline), per scenario, episode and
    /// time: a bootstrap interval of the difference of medians against a noise threshold. A
    /// regressed time is a failed gate `regression:time_to_detect[1]` (exit 1); too few samples
    /// (under 5 on a side) or a key that differs is inconclusive (exit 3).
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// With --baseline: a change smaller than this percentage of the baseline median (or than
    /// the time's resolution, if larger) is noise.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT", value_parser = percent)]
    pub noise: f64,
    /// With --baseline: the significance level; the interval is a (1 − LEVEL) one.
    #[arg(long, default_value_t = 0.05, value_name = "LEVEL", value_parser = level)]
    pub significance: f64,
    /// Print only the verdict lines, not the full summaries.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also allow probes and detection sources to reach HOST (by default only loopback).
    #[arg(long = "allow-target", value_name = "HOST")]
    pub allow_targets: Vec<String>,
    /// Where the revert journal lives [default: $RELAPSE_STATE_DIR, else
    /// $XDG_STATE_HOME/relapse, else ~/.local/state/relapse].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

fn level(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(l) if l > 0.0 && l < 1.0 => Ok(l),
        _ => Err(format!(
            "{text:?} is not a level between 0 and 1 (e.g. 0.05)"
        )),
    }
}

/// The flags of `relapse report`.
#[derive(Args)]
pub struct ReportArgs {
    /// JSON reports written by `relapse run --json`; their runs are read in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the self-contained HTML page here (replaced if it exists).
    #[arg(long, value_name = "PATH", required_unless_present = "markdown")]
    pub html: Option<PathBuf>,
    /// Append the Markdown summary table to this file, as `relapse run --markdown` does.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}

/// `relapse flood`: the standalone flood's flags, and the agents it may be spread over.
#[derive(Debug, clap::Args)]
pub struct FloodCommand {
    #[command(flatten)]
    pub flood: relapse_flood::cli::FloodArgs,
    /// Spread the flood over the agents of this file (`[[agent]]` tables, as in a scenario):
    /// each gets an equal share of --rate, --connections, --requests and the sources, all start
    /// at one instant, and their figures merge into one report. --threads is then each agent's
    /// own choice.
    #[arg(long, value_name = "FILE")]
    pub agents: Option<std::path::PathBuf>,
}
