//! The run's `[[target.process]]`: the service under test (or a load balancer in front of it,
//! the monitoring that watches it) started for the run and stopped after it.
//!
//! Each process starts in a process group of its own, with stdout and stderr in one file in the
//! run's directory, and with a token in its environment (`RELAPSE_PROCESS_TOKEN`) that its
//! children inherit. The journal holds the token before the process exists, so the guardian or
//! `relapse cleanup` can end whatever carries it after a crash of relapse — the process, and any
//! child that left its group — without trusting a pid that may have been reused.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use relapse_core::fault::RevertError;
use relapse_core::scenario::{ProcessSpec, ProcessStop, ReadyCheck, Vars};
use relapse_core::sense::Probe;
use serde::{Deserialize, Serialize};

use crate::reach::{reachable_address, reachable_url, render};

/// The journal kind of a started process (a [`ProcessRecord`]).
pub const KIND: &str = "target_process";
/// The environment variable that marks a started process and its children.
pub const TOKEN_VARIABLE: &str = "RELAPSE_PROCESS_TOKEN";
/// How often readiness is checked.
const READY_POLL: Duration = Duration::from_millis(50);
/// The bound of one readiness check (a connect, a GET).
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How many of its last output lines an error about a process shows.
const TAIL_LINES: usize = 10;
/// How long a SIGKILLed process may take to be gone before relapse says it is stuck.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What the journal keeps of a started process: enough for another process to end it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    /// The value of [`TOKEN_VARIABLE`] in its environment and its children's.
    pub token: String,
    pub signal: i32,
    pub grace_ms: u64,
}

/// A process relapse started for the run.
pub struct Started {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: tokio::process::Child,
    token: String,
    stop: ProcessStop,
    /// Its journal entry.
    pub entry: Option<u64>,
}

/// How a started process ended, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    /// "stopped by SIGTERM after 12ms", "had exited on its own (exit status: 1)", …
    pub how: String,
}

/// Why a process did not start or get ready. `started` is set when a process exists (and must
/// be stopped by the caller).
pub struct StartError {
    pub message: String,
    pub started: Option<Started>,
    /// The journal entry of a process that never started, to strike.
    pub entry: Option<u64>,
}

/// Picks a free loopback port for each name: bound to 127.0.0.1:0 and released, so a process
/// can bind it a moment later.
pub fn pick_ports<'a>(
    names: impl Iterator<Item = &'a String>,
) -> std::io::Result<Vec<(String, u16)>> {
    // All are held until every one is picked, so no two names get the same port.
    let mut held = Vec::new();
    for name in names {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        held.push((name.clone(), port, listener));
    }
    Ok(held
        .into_iter()
        .map(|(name, port, _)| (name, port))
        .collect())
}

/// A fresh token for a process's environment.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Writes the process's files into `run_dir`, then starts it (after `record` journaled it) and
/// waits until it is ready. `vars` must hold `{run.dir}`, the ports and the processes started
/// before it.
pub async fn start(
    spec: &ProcessSpec,
    vars: &Vars,
    run_dir: &Path,
    allowed: &[String],
    record: impl FnOnce(&ProcessRecord) -> Result<Option<u64>, String>,
) -> Result<Started, StartError> {
    let failed = |message: String| StartError {
        message,
        started: None,
        entry: None,
    };
    for (path, content) in &spec.files {
        let text = content
            .render_config(vars)
            .map_err(|e| failed(e.to_string()))?;
        let target = run_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::write(&target, text)
            .map_err(|e| failed(format!("writing {}: {e}", target.display())))?;
    }
    let argv: Vec<String> = spec
        .run
        .iter()
        .map(|arg| render(arg, vars))
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    let cwd = match &spec.cwd {
        Some(cwd) => PathBuf::from(render(cwd, vars).map_err(failed)?),
        None => run_dir.to_path_buf(),
    };
    let log = run_dir.join(format!("{}.log", spec.name));
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| failed(format!("creating {}: {e}", log.display())))?;
    let errors = output
        .try_clone()
        .map_err(|e| failed(format!("{}: {e}", log.display())))?;
    let token = new_token();
    let entry = record(&ProcessRecord {
        name: spec.name.clone(),
        token: token.clone(),
        signal: spec.stop.signal,
        grace_ms: spec.stop.grace.as_millis() as u64,
    })
    .map_err(failed)?;

    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(&cwd)
        .env(TOKEN_VARIABLE, &token)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        // Its own group, so a stop reaches what it starts too; and a backstop for a harness
        // dropped without a shutdown.
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in &spec.env {
        command.env(key, render(value, vars).map_err(failed)?);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // Nothing carries the token: the entry has nothing to revert.
            return Err(StartError {
                message: format!("cannot start {:?} in {}: {e}", argv[0], cwd.display()),
                started: None,
                entry,
            });
        }
    };
    let pid = child.id().expect("a child not yet waited for has its pid");
    let mut started = Started {
        name: spec.name.clone(),
        pid,
        log,
        child,
        token,
        stop: spec.stop,
        entry,
    };
    if let Some(ready) = &spec.ready {
        if let Err(message) =
            wait_ready(&mut started, &ready.check, ready.timeout, vars, allowed).await
        {
            return Err(StartError {
                message,
                started: Some(started),
                entry: None,
            });
        }
    }
    Ok(started)
}

/// Polls `check` until it holds, the process exits, or `timeout` passes.
async fn wait_ready(
    started: &mut Started,
    check: &ReadyCheck,
    timeout: Duration,
    vars: &Vars,
    allowed: &[String],
) -> Result<(), String> {
    let probe: Option<Box<dyn Probe>> = match check {
        ReadyCheck::Tcp(address) => {
            let address = render(address, vars)?;
            reachable_address(&address, allowed)?;
            Some(Box::new(
                relapse_probe::TcpProbe::new(&address, READY_CHECK_TIMEOUT)
                    .map_err(|e| e.to_string())?,
            ))
        }
        ReadyCheck::Http { url, status } => {
            let url = render(url, vars)?;
            reachable_url(&url, allowed)?;
            Some(Box::new(
                relapse_probe::HttpProbe::new(&url, "GET", READY_CHECK_TIMEOUT, status.clone())
                    .map_err(|e| e.to_string())?,
            ))
        }
        ReadyCheck::Log(_) => None,
    };
    let pattern = match check {
        ReadyCheck::Log(pattern) => Some(regex::Regex::new(pattern).map_err(|e| e.to_string())?),
        _ => None,
    };
    let mut log_reader = LogTail::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_failure = String::from("not checked yet");
    loop {
        if let Ok(Some(status)) = started.child.try_wait() {
            return Err(format!(
                "process \"{}\" (pid {}) exited before it was ready ({status}); its output is in {}{}",
                started.name,
                started.pid,
                started.log.display(),
                tail_text(&started.log)
            ));
        }
        let ready = match (&probe, &pattern) {
            (Some(probe), _) => match probe.check().await {
                relapse_core::sense::Outcome::Success { .. } => true,
                relapse_core::sense::Outcome::Failure { status, error } => {
                    last_failure = match status {
                        Some(status) => format!("status {status}"),
                        None => error,
                    };
                    false
                }
            },
            (None, Some(pattern)) => {
                let found = log_reader.any_new_line(&started.log, |line| pattern.is_match(line));
                if !found {
                    last_failure = format!("no line of its output matched /{pattern}/");
                }
                found
            }
            (None, None) => true,
        };
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "process \"{}\" (pid {}) was not ready within {} (last check: {last_failure}); its output is in {}{}",
                started.name,
                started.pid,
                humantime::format_duration(timeout),
                started.log.display(),
                tail_text(&started.log)
            ));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Reads a growing log file line by line, from where it last stopped.
#[derive(Default)]
struct LogTail {
    offset: u64,
    partial: String,
}

impl LogTail {
    fn any_new_line(&mut self, path: &Path, mut matches: impl FnMut(&str) -> bool) -> bool {
        let Ok(mut file) = File::open(path) else {
            return false;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut reader = BufReader::new(file);
        let mut found = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.offset += n as u64;
                    if !line.ends_with('\n') {
                        // A line still being written: matched once it is whole.
                        self.partial.push_str(&line);
                        break;
                    }
                    let whole = std::mem::take(&mut self.partial) + &line;
                    found |= matches(whole.trim_end_matches(['\r', '\n']));
                }
            }
        }
        found
    }
}

/// `"; its last lines:\n  …"` of a log, or nothing when it is empty.
fn tail_text(path: &Path) -> String {
    let Ok(file) = File::open(path) else {
        return String::new();
    };
    let mut last: VecDeque<String> = VecDeque::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if last.len() == TAIL_LINES {
            last.pop_front();
        }
        last.push_back(line);
    }
    if last.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = last.into_iter().map(|l| format!("  {l}")).collect();
    format!("; its last lines:\n{}", lines.join("\n"))
}

impl Started {
    /// Stops the process: its signal to its group, SIGKILL after the grace period, then
    /// SIGKILL for anything else that still carries its token.
    pub async fn stop(mut self) -> Ended {
        let began = Instant::now();
        let signal = Signal::try_from(self.stop.signal).unwrap_or(Signal::SIGTERM);
        let how = match self.child.try_wait() {
            Ok(Some(status)) => format!("had exited on its own ({})", describe(status)),
            _ => {
                let group = Pid::from_raw(self.pid as i32);
                let _ = killpg(group, signal);
                match tokio::time::timeout(self.stop.grace, self.child.wait()).await {
                    Ok(Ok(status)) => format!(
                        "stopped by {} in {:.1?} ({})",
                        signal.as_str(),
                        began.elapsed(),
                        describe(status)
                    ),
                    _ => {
                        let _ = killpg(group, Signal::SIGKILL);
                        let waited = tokio::time::timeout(KILL_WAIT, self.child.wait()).await;
                        let state = match waited {
                            Ok(Ok(_)) => "killed",
                            _ => "sent SIGKILL but not seen to end",
                        };
                        format!(
                            "{state} (SIGKILL) after {} did not end it within the {} grace",
                            signal.as_str(),
                            humantime::format_duration(self.stop.grace)
                        )
                    }
                }
            }
        };
        // The group is gone; a child that left it still carries the token.
        let strays = end_token(&self.token, Signal::SIGKILL, Duration::ZERO);
        let how = if strays.is_empty() {
            how
        } else {
            format!(
                "{how}; killed {} stray process(es) it had started: {strays:?}",
                strays.len()
            )
        };
        Ended {
            name: self.name,
            pid: self.pid,
            log: self.log,
            how,
        }
    }

    /// The backstop when a harness is dropped without a shutdown: SIGKILL to the group, now.
    pub fn kill_now(&self) {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }
}

fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// Sends `signal` to every process whose environment carries `token`, waits up to `grace` for
/// them to end, and SIGKILLs what is left. Returns the pids it signalled.
fn end_token(token: &str, signal: Signal, grace: Duration) -> Vec<u32> {
    let marked = carrying(token);
    for pid in &marked {
        let _ = kill(Pid::from_raw(*pid as i32), signal);
    }
    if signal != Signal::SIGKILL && !marked.is_empty() {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !carrying(token).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in carrying(token) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    marked
}

/// The pids whose environment holds `TOKEN_VARIABLE=token` (zombies have none, and are ended
/// already).
fn carrying(token: &str) -> Vec<u32> {
    let needle = format!("{TOKEN_VARIABLE}={token}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|entry| entry == needle.as_bytes())
            })
        })
        .collect()
}

/// The journaled revert: ends everything that carries the record's token (its signal, the
/// grace, then SIGKILL). Idempotent: nothing left is success.
pub fn revert_record(record: &ProcessRecord) -> Result<String, RevertError> {
    let signal = Signal::try_from(record.signal).unwrap_or(Signal::SIGTERM);
    let ended = end_token(
        &record.token,
        signal,
        Duration::from_millis(record.grace_ms),
    );
    let left = carrying(&record.token);
    if !left.is_empty() {
        return Err(RevertError::failed(
            format!("stopping process \"{}\"", record.name),
            format!("pids {left:?} still run after SIGKILL"),
        ));
    }
    Ok(if ended.is_empty() {
        format!("process \"{}\": nothing of it was left", record.name)
    } else {
        format!(
            "process \"{}\": ended pids {ended:?} ({} then SIGKILL)",
            record.name,
            signal.as_str()
        )
    })
}
