//! What the end-to-end tests share: running the
//! `relapse` binary and looking at processes and the journal afterwards.

#![allow(dead_code)] // each test file uses its own part

pub mod agents;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Serialises the tests of one file that measure timing windows: on a 2-core machine, two runs
/// at once would each stretch the other's windows.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn relapse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relapse"));
    command.stdin(Stdio::null());
    command
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a shipped scenario with a JSON report and a state directory of its own; returns the
/// output, the first run's report and the state directory (kept until the guard drops).
pub fn run_shipped(scenario: &str) -> (Output, Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = relapse()
        .arg("run")
        .arg(repo(scenario))
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|_| panic!("no JSON report\n{}", show(&output)));
    let report: Value = serde_json::from_str(&text).unwrap();
    (output, report["runs"][0].clone(), dir)
}

/// Whether `pid` runs (a zombie has ended; only its parent's wait is missing).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

pub fn journal_is_empty(state: &Path) -> bool {
    std::fs::read_dir(state.join("runs")).map_or(true, |mut d| d.next().is_none())
}

/// Polls until `done`, at most `within`: for what another process does on its own time.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every process the run started has ended, and the journal is empty.
pub fn assert_processes_gone(run: &Value, state: &Path) {
    for process in run["processes"].as_array().unwrap() {
        let pid = process["pid"].as_u64().unwrap() as u32;
        assert!(!alive(pid), "{process} outlived the run");
    }
    assert!(journal_is_empty(state), "the journal is not empty");
}

/// psql on the real PostgreSQL (database test, user postgres), for one statement.
fn psql_command(sql: &str) -> Command {
    let mut command = Command::new("psql");
    command.args([
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "test",
        "-XAtqc",
        sql,
    ]);
    command
}

/// One statement through psql; its output.
pub fn psql(sql: &str) -> String {
    let output = psql_command(sql)
        .output()
        .expect("psql is installed with PostgreSQL");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A table of this test's own on the real PostgreSQL, dropped at the end.
pub struct PgTable(pub String);

impl PgTable {
    pub fn create(test: &str) -> PgTable {
        let name = format!("relapse_e2e_{}_{test}", std::process::id());
        psql(&format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int primary key, body text); INSERT INTO {name} VALUES (1, 'mail')"));
        PgTable(name)
    }

    /// Granted locks on the table, held by sessions other than psql's own.
    pub fn locks_held(&self) -> u32 {
        psql(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid WHERE c.relname = '{}' AND l.granted AND l.pid <> pg_backend_pid()",
            self.0
        ))
        .parse()
        .unwrap()
    }
}

impl Drop for PgTable {
    fn drop(&mut self) {
        let _ = psql_command(&format!("DROP TABLE IF EXISTS {}", self.0)).output();
    }
}
