//! Reading a scenario: the file is read by serde in one pass (which gives line:column for its
//! own errors), then `convert` checks each section in order and builds the model. The first
//! problem found is the one reported.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::check::{self, Env};
use super::{fault, file, Scenario};

/// Why a scenario could not be loaded. `Invalid` carries the place in the file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read the scenario: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads and checks a scenario file. Probes and detection sources may reach only loopback and
/// the scenario's own `allow_targets`.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    load_allowing(path, &[])
}

/// Like [`load`], with more hosts allowed (the command line's `--allow-target`).
pub fn load_allowing(path: &Path, allowed: &[String]) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_allowing(path, &text, allowed)
}

/// Parses and checks scenario text; `path` is used in error messages only.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    parse_allowing(path, text, &[])
}

/// Like [`parse`], with more hosts allowed.
pub fn parse_allowing(
    path: &Path,
    text: &str,
    allowed: &[String],
) -> Result<Scenario, ScenarioError> {
    let invalid = |span, message| invalid_at(path, text, span, message);
    let parsed: file::ScenarioFile =
        toml::from_str(text).map_err(|err| toml_error(path, text, err))?;
    let mut scenario = convert(parsed, allowed, text)
        .map_err(|Problem { span, message }| invalid(Some(span), message))?;
    // An agent's files are named relative to the scenario, wherever relapse runs from.
    let dir = path.parent().unwrap_or(Path::new(""));
    for agent in &mut scenario.agents {
        agent.ca = dir.join(&agent.ca);
        agent.token_file = dir.join(&agent.token_file);
    }
    Ok(scenario)
}

/// A problem at `span` of `text` (its start; the top without one), with its line and column.
fn invalid_at(
    path: &Path,
    text: &str,
    span: Option<Range<usize>>,
    message: String,
) -> ScenarioError {
    let (line, column) = line_column(text, span.map_or(0, |s| s.start));
    ScenarioError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// serde's own error, at its place.
fn toml_error(path: &Path, text: &str, err: toml::de::Error) -> ScenarioError {
    let message = err.message().trim_end_matches('.').to_string();
    invalid_at(path, text, err.span(), message)
}

/// What an agent receives from a coordinator: one `[[fault]]` or one `[[probe]]` table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentTables {
    #[serde(default)]
    fault: Vec<toml::Spanned<fault::FaultSection>>,
    #[serde(default)]
    probe: Vec<file::ProbeSection>,
}

/// Reads `text` as [`AgentTables`], picks the sections of `what` with `sections`, and checks
/// that there is exactly one, with `check`, against the agent's own world: no demo, proxies,
/// scratch file systems or started processes; the hosts in `allowed` besides loopback; the
/// template variables in `vars`. `path` names the text in errors, which give its line and
/// column.
fn one_agent_table<S, T>(
    path: &Path,
    text: &str,
    (allowed, vars): (&[String], &super::Vars),
    what: &str,
    sections: impl FnOnce(AgentTables) -> Vec<S>,
    check: impl FnOnce(&[S], &Env) -> Result<Vec<T>, Problem>,
) -> Result<T, ScenarioError> {
    let parsed: AgentTables = toml::from_str(text).map_err(|err| toml_error(path, text, err))?;
    let tables = parsed.fault.len() + parsed.probe.len();
    let sections = sections(parsed);
    if sections.len() != 1 || tables != 1 {
        let message =
            format!("expected exactly one [[{what}]] and nothing else, found {tables} tables");
        return Err(invalid_at(path, text, None, message));
    }
    let env = Env::bare(allowed, vars);
    let mut checked = check(&sections, &env)
        .map_err(|Problem { span, message }| invalid_at(path, text, Some(span), message))?;
    Ok(checked.remove(0))
}

/// One `[[fault]]` table on its own, as an agent receives it from a coordinator: its `name`,
/// `start` and `duration` and exactly one kind, checked as in a scenario but against the
/// agent's own world (see [`one_agent_table`]).
pub fn parse_fault_table(
    path: &Path,
    text: &str,
    allowed: &[String],
    vars: &super::Vars,
) -> Result<super::FaultSpec, ScenarioError> {
    let check =
        |sections: &[_], env: &Env| fault::check(sections, env, &[], &fault::Remote::default());
    one_agent_table(path, text, (allowed, vars), "fault", |t| t.fault, check)
}

/// One `[[probe]]` table on its own, as an agent receives it: its `name` and exactly one kind,
/// checked as in a scenario but against the agent's own world (see [`one_agent_table`]).
pub fn parse_probe_table(
    path: &Path,
    text: &str,
    allowed: &[String],
    vars: &super::Vars,
) -> Result<super::ProbeSpec, ScenarioError> {
    let check =
        |sections: &[_], env: &Env| check::probe::check(sections, env, &fault::Remote::default());
    one_agent_table(path, text, (allowed, vars), "probe", |t| t.probe, check)
}

/// A checking failure at a place in the file.
pub(super) struct Problem {
    pub span: Range<usize>,
    pub message: String,
}

pub(super) fn problem<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Problem> {
    Err(Problem {
        span,
        message: message.into(),
    })
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The file's sections, checked in this order (which decides which problem is reported first).
fn convert(
    f: file::ScenarioFile,
    extra_allowed: &[String],
    text: &str,
) -> Result<Scenario, Problem> {
    let allowed: Vec<String> = f
        .scenario
        .allow_targets
        .iter()
        .chain(extra_allowed)
        .cloned()
        .collect();
    let agents = check::agent::check(&f.agent)?;
    let demo_host = check::demo::host(f.target.demo.as_ref())?;
    let db_proxies = check::db_proxy::check(&f.db_proxy, &allowed)?;
    // The demo's database may be reached through a proxy of the run; the demo's own variables
    // are not known before the demo starts.
    let proxy_vars = check::db_proxy::variables(&db_proxies);
    // The demo's mail store may be a scratch file system of the run.
    let scratch_fs = check::scratch_fs::check(&f.scratch_fs)?;
    let mut before_demo = proxy_vars.clone();
    check::scratch_fs::variables(&scratch_fs, &mut before_demo);
    let demo = check::demo::check(f.target.demo, demo_host, &before_demo)?;
    let mut vars = check::variables(&before_demo, demo.as_ref());
    check::agent::variables(&agents, &mut vars);
    // A gate's source may be a scratch file system; what uses a gate sees its path.
    let fs_gates = check::fs_gate::check(
        &f.fs_gate,
        &Env {
            allowed: &allowed,
            vars: &vars,
            demo: demo.as_ref(),
            db_proxies: &db_proxies,
            scratch_fs: &scratch_fs,
            fs_gates: &[],
            processes: &[],
            on_agent: None,
        },
    )?;
    check::fs_gate::variables(&fs_gates, &mut vars);
    // Processes start after the demo (a proxy in front of it names its address); what comes
    // after them may name their pids, ports and output.
    let processes = check::process::check(
        &f.target.process,
        &Env {
            allowed: &allowed,
            vars: &vars,
            demo: demo.as_ref(),
            db_proxies: &db_proxies,
            scratch_fs: &scratch_fs,
            fs_gates: &fs_gates,
            processes: &[],
            on_agent: None,
        },
    )?;
    check::process::run_variables(&f.target.process, &mut vars);
    for process in &processes {
        check::process::variables(&process.name, &mut vars);
    }
    let env = Env {
        allowed: &allowed,
        vars: &vars,
        demo: demo.as_ref(),
        db_proxies: &db_proxies,
        scratch_fs: &scratch_fs,
        fs_gates: &fs_gates,
        processes: &processes,
        on_agent: None,
    };
    let sink_listen = check::sink::check(&f.sink)?;
    // What runs on an agent travels as its own table: the document read again as plain TOML
    // values, which serde already found valid.
    let probe_tables = if f.probe.iter().any(|probe| probe.on.is_some()) {
        document_tables(text, "probe")
    } else {
        Vec::new()
    };
    let probes = check::probe::check(
        &f.probe,
        &env,
        &fault::Remote {
            agents: &agents,
            tables: &probe_tables,
        },
    )?;
    let steady_state = check::steady::check(f.steady_state, &probes)?;
    let detectors = check::detect::check(&f.detect, &env)?;
    let fault_tables = if f.fault.iter().any(|fault| fault.get_ref().on.is_some()) {
        document_tables(text, "fault")
    } else {
        Vec::new()
    };
    let remote = fault::Remote {
        agents: &agents,
        tables: &fault_tables,
    };
    let faults = fault::check(&f.fault, &env, &detectors, &remote)?;
    let stops = check::stop::check(&f.stop, &probes, &steady_state)?;
    let has_http_flood = f.fault.iter().any(|s| s.get_ref().http_flood.is_some());
    let gates = check::gates::check(&f.gates, &detectors, has_http_flood)?;
    let limits = check::limits::check(&f.limits)?;
    let backlog = check::backlog::check(f.backlog.as_ref(), &env)?;

    let mitigation = check::mitigation(f.scenario.mitigation.as_ref())?;
    let expect = check::expect::check(&f.scenario, &gates, &faults, !detectors.is_empty())?;

    Ok(Scenario {
        name: f.scenario.name,
        mitigation,
        expect,
        description: f.scenario.description,
        incident: f.scenario.incident,
        demo,
        processes,
        sink_listen,
        probes,
        steady_state,
        detectors,
        faults,
        gates,
        limits,
        stops,
        db_proxies,
        scratch_fs,
        fs_gates,
        backlog,
        allow_targets: allowed,
        agents,
    })
}

/// The document's `[[section]]` tables as plain TOML values, in order.
fn document_tables(text: &str, section: &str) -> Vec<toml::Value> {
    match toml::from_str::<toml::Table>(text) {
        Ok(mut document) => match document.remove(section) {
            Some(toml::Value::Array(faults)) => faults,
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// A file of `[[agent]]` tables and nothing else (`relapse flood --agents`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agent: Vec<file::AgentSection>,
}

/// Reads a file of `[[agent]]` tables, checked as a scenario's are; their `ca` and
/// `token_file` are relative to the file's directory.
pub fn load_agents(path: &Path) -> Result<Vec<super::AgentSpec>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed: AgentsFile = toml::from_str(&text).map_err(|err| toml_error(path, &text, err))?;
    if parsed.agent.is_empty() {
        let message = "no [[agent]]: expected one table per agent (name, url, ca, token_file)";
        return Err(invalid_at(path, &text, None, message.into()));
    }
    let mut agents = check::agent::check(&parsed.agent)
        .map_err(|Problem { span, message }| invalid_at(path, &text, Some(span), message))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    for agent in &mut agents {
        agent.ca = dir.join(&agent.ca);
        agent.token_file = dir.join(&agent.token_file);
    }
    Ok(agents)
}

/// One `[[fault]]` table whose `on` spreads it over some of `agents`, checked as in a scenario
/// (`relapse flood --agents` writes it from its flags); `path` names the text in errors.
pub fn parse_spread_fault(
    path: &Path,
    text: &str,
    agents: &[super::AgentSpec],
    allowed: &[String],
) -> Result<super::FaultSpec, ScenarioError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OneFault {
        fault: Vec<toml::Spanned<fault::FaultSection>>,
    }
    let parsed: OneFault = toml::from_str(text).map_err(|err| toml_error(path, text, err))?;
    let mut vars = super::Vars::default();
    check::agent::variables(agents, &mut vars);
    let env = Env::bare(allowed, &vars);
    let tables = document_tables(text, "fault");
    let remote = fault::Remote {
        agents,
        tables: &tables,
    };
    let mut faults = fault::check(&parsed.fault, &env, &[], &remote)
        .map_err(|Problem { span, message }| invalid_at(path, text, Some(span), message))?;
    match faults.len() {
        1 => Ok(faults.remove(0)),
        n => Err(invalid_at(
            path,
            text,
            None,
            format!("expected exactly one [[fault]], found {n}"),
        )),
    }
}
