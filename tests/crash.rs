//! The crash test: for every fault kind in the kind table, `kill -9` of `relapse run` at random
//! instants while the fault is applied, then, within 1 s, nothing of it is left: no process in
//! state T, no lock held, no namespace, no port holder or other helper process, the proxy's port closed, no flood
//! connection open, no demo table, no mount or loop device of relapse's, the journal empty.
//!
//! Rounds per kind: `RELAPSE_CRASH_ROUNDS` (default 5); the instants come from a seed that is
//! printed, and `RELAPSE_CRASH_SEED` replays one. Real processes, a real PostgreSQL, real
//! namespaces; every process the test starts is ended by its own pid.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use relapse::kinds::{FaultKindEntry, FAULT_KINDS};
use serde_json::Value;

mod support;

use support::psql;

/// How long after the kill everything must be gone.
const CLEAN_WITHIN: Duration = Duration::from_secs(1);
/// The same where the sample makes a scratch file system (`[[scratch_fs]]`): removing it
/// unmounts (which flushes its dirty data to a loop device on the host's disk, slow when that
/// disk is), retrying a busy unmount for up to 1 s, and detaches the loop device, waiting up
/// to 3 s for the kernel to let go of it (relapse-fs's UNMOUNT_BUSY_FOR and DETACH_WITHIN).
/// The bound is those two on top of the 1 s everything else gets.
const CLEAN_SCRATCH_FS_WITHIN: Duration = Duration::from_secs(1 + 1 + 3);
/// How long a run may take to get its fault applied: the demo's start, a 200 ms steady-state
/// window at 50 ms probes, and the injection, with room for a loaded CI machine.
const APPLIED_WITHIN: Duration = Duration::from_secs(30);

/// A process the test starts for kinds that act on a process; ended by its pid on drop.
struct Target(Child);

impl Target {
    fn start() -> Target {
        Target(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.trim_start().chars().next().unwrap()
    }

    /// The "Max open files" line of /proc/PID/limits.
    fn open_files_limit(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/limits", self.pid()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pending journal entries under a state directory: (kind, record).
fn pending(state: &Path) -> Vec<(String, Value)> {
    let mut entries = Vec::new();
    let Ok(runs) = std::fs::read_dir(state.join("runs")) else {
        return entries;
    };
    for run in runs.flatten() {
        let Ok(files) = std::fs::read_dir(run.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name == "owner.json" || !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            if let Ok(entry) = std::fs::read(file.path()) {
                if let Ok(entry) = serde_json::from_slice::<Value>(&entry) {
                    entries.push((
                        entry["kind"].as_str().unwrap_or("").to_string(),
                        entry["revert"].clone(),
                    ));
                }
            }
        }
    }
    entries
}

fn journal_is_empty(state: &Path) -> bool {
    std::fs::read_dir(state.join("runs")).map_or(true, |mut d| d.next().is_none())
}

/// Network namespaces whose name says this harness made them.
fn namespaces_of(harness: u32) -> Vec<String> {
    let prefix = format!("relapse-{harness}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes running a kind's helper (port holders, thaw holders, canaries); zombies
/// waiting for init to reap them are gone already.
fn helpers() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__helper\0"))
        })
        .collect()
}

/// Established TCP connections to `port` on loopback (IPv4), from /proc/net/tcp.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // remote address is field 2 as HEXIP:HEXPORT; state 01 is ESTABLISHED.
            fields.len() > 3
                && fields[3] == "01"
                && fields[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// What a round found left behind, in words; empty when nothing.
fn leftovers(
    entry: &FaultKindEntry,
    harness: u32,
    state: &Path,
    target: Option<&Target>,
    limits_before: Option<&str>,
    record: &Value,
) -> Vec<String> {
    let mut left = Vec::new();
    if !journal_is_empty(state) {
        left.push(format!("journal: {:?}", pending(state)));
    }
    if let Some(target) = target {
        if target.state() == 'T' {
            left.push(format!("pid {} in state T", target.pid()));
        }
        if let Some(before) = limits_before {
            let now = target.open_files_limit();
            if now != before {
                left.push(format!("limits {now:?}, before {before:?}"));
            }
        }
    }
    let tables = psql(&format!(
        "select count(*) from pg_tables where tablename like 'relapse_demo_{harness}_%'"
    ));
    if tables != "0" {
        left.push(format!("{tables} demo tables"));
    }
    let sessions = psql(&format!(
        "select count(*) from pg_stat_activity where application_name like 'relapse-db-lock-{harness}-%'"
    ));
    if sessions != "0" {
        left.push(format!("{sessions} db_lock sessions (and their locks)"));
    }
    let namespaces = namespaces_of(harness);
    if !namespaces.is_empty() {
        left.push(format!("namespaces {namespaces:?}"));
    }
    // Scratch file systems are mounted under the run's journal directory, inside `state`; their
    // images are in memory, named after the harness's pid.
    let state_path = state.display().to_string();
    let images = format!("/dev/shm/relapse-{harness}-");
    let mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&state_path))
        .map(str::to_string)
        .collect();
    if !mounts.is_empty() {
        left.push(format!("mounts {mounts:?}"));
    }
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let loops: Vec<String> = String::from_utf8_lossy(&loops.stdout)
        .lines()
        .filter(|l| l.contains(&state_path) || l.contains(&images))
        .map(str::to_string)
        .collect();
    if !loops.is_empty() {
        left.push(format!("loop devices {loops:?}"));
    }
    let image_files: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().display().to_string())
                .filter(|p| p.starts_with(&images))
                .collect()
        })
        .unwrap_or_default();
    if !image_files.is_empty() {
        left.push(format!("scratch images {image_files:?}"));
    }
    let helpers = helpers();
    if !helpers.is_empty() {
        left.push(format!("helper processes {helpers:?}"));
    }
    if entry.kind == relapse_dbproxy::KIND {
        let proxy: SocketAddr = record["proxy"].as_str().unwrap().parse().unwrap();
        if TcpStream::connect_timeout(&proxy, Duration::from_millis(100)).is_ok() {
            left.push(format!("the proxy at {proxy} still accepts"));
        }
    }
    if let Some(target) = record["target"].as_str() {
        let port = target.parse::<SocketAddr>().unwrap().port();
        let open = connections_to(port);
        if open > 0 {
            left.push(format!("{open} flood connections to {target}"));
        }
    }
    left
}

#[derive(Default)]
struct Counts {
    rounds: u32,
    mid_fault: u32,
    left_behind: u32,
    slowest: Duration,
}

#[test]
fn kill_9_mid_fault_of_every_kind_leaves_nothing_behind() {
    let rounds: u32 = std::env::var("RELAPSE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("RELAPSE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    // Printed so that a failure can be replayed with the same instants.
    eprintln!("crash test: seed {seed} (RELAPSE_CRASH_SEED), {rounds} rounds per kind");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut summary = Vec::new();
    let mut failures = Vec::new();
    for entry in FAULT_KINDS {
        let mut counts = Counts::default();
        for round in 0..rounds {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let target = entry.sample.contains("@TARGET_PID@").then(Target::start);
            let limits_before = target.as_ref().map(Target::open_files_limit);
            let text = match &target {
                Some(t) => entry.sample.replace("@TARGET_PID@", &t.pid().to_string()),
                None => entry.sample.to_string(),
            };
            let file = dir.path().join(format!("{}.toml", entry.kind));
            std::fs::write(&file, text).unwrap();
            let log = std::fs::File::create(dir.path().join("relapse.log")).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_relapse"))
                .arg("run")
                .arg(&file)
                .env("RELAPSE_STATE_DIR", &state)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let harness = child.id();

            // Wait for the fault's journal entry: it is written just before injection and
            // struck only once the revert is confirmed.
            let started = Instant::now();
            let record = loop {
                if let Some((_, record)) =
                    pending(&state).into_iter().find(|(k, _)| k == entry.kind)
                {
                    break record;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(dir.path().join("relapse.log")).unwrap();
                    panic!(
                        "{}: relapse exited ({status}) before the fault was applied:\n{log}",
                        entry.kind
                    );
                }
                assert!(
                    started.elapsed() < APPLIED_WITHIN,
                    "{}: no journal entry within {APPLIED_WITHIN:?}",
                    entry.kind
                );
                std::thread::sleep(Duration::from_millis(2));
            };
            // A random instant while the fault is applied: each kind confirms within
            // milliseconds of its entry, and the fault lasts 10 s.
            let pause = Duration::from_millis(rng.random_range(20..400));
            std::thread::sleep(pause);
            // Still applied at the kill: the fault's entry is there (struck only once reverted).
            let applied = pending(&state).iter().any(|(k, _)| k == entry.kind)
                && target
                    .as_ref()
                    .is_none_or(|t| entry.kind != relapse_hang::KIND || t.state() == 'T');
            child.kill().unwrap();
            let killed = Instant::now();
            child.wait().unwrap();

            let check = || {
                leftovers(
                    entry,
                    harness,
                    &state,
                    target.as_ref(),
                    limits_before.as_deref(),
                    &record,
                )
            };
            let within = if entry.sample.contains("[[scratch_fs]]") {
                CLEAN_SCRATCH_FS_WITHIN
            } else {
                CLEAN_WITHIN
            };
            let mut left = check();
            while !left.is_empty() && killed.elapsed() < within {
                std::thread::sleep(Duration::from_millis(5));
                left = check();
            }
            counts.rounds += 1;
            counts.mid_fault += u32::from(applied);
            counts.slowest = counts.slowest.max(killed.elapsed());
            if !left.is_empty() {
                counts.left_behind += 1;
                failures.push(format!(
                    "{} round {round} (killed {pause:?} after its entry): left {left:?}",
                    entry.kind
                ));
            }
        }
        summary.push(format!(
            "  {:<17} rounds {:>3}  mid-fault {:>3}  left behind {}  slowest clean-up {:?}",
            entry.kind, counts.rounds, counts.mid_fault, counts.left_behind, counts.slowest
        ));
        // Enough kills must land while the fault is applied for the round to mean something.
        assert!(
            counts.mid_fault * 2 >= counts.rounds,
            "{}: only {} of {} kills landed mid-fault",
            entry.kind,
            counts.mid_fault,
            counts.rounds
        );
    }
    eprintln!("crash test, seed {seed}:\n{}", summary.join("\n"));
    assert!(failures.is_empty(), "left behind:\n{}", failures.join("\n"));
}
