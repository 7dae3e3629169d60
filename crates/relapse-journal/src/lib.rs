//! The revert journal: before a fault is injected, how to revert it is written to disk and
//! fsync'd; once its revert is confirmed, the entry is removed. Whatever a journal still holds is
//! applied (or may be), and whoever finds it — the guardian when the harness dies, `relapse
//! cleanup` by hand — reverts it.
//!
//! Layout under the state directory:
//!
//! ```text
//! STATE/runs/<pid>-<nanos>/owner.json     the harness that owns the run: pid and start time
//! STATE/runs/<pid>-<nanos>/<id>.json      one pending revert each
//! ```
//!
//! Every write goes to a temporary name, is fsync'd, renamed into place, and the directory is
//! fsync'd, so a crash leaves either the whole entry or none of it.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("journal entry {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One pending revert: which injector reverts it, and the injector's own instructions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The fault kind, e.g. `process_freeze`; picks the injector that can revert it.
    pub kind: String,
    /// The scenario's name for the fault.
    pub fault: String,
    /// What the fault does, for people reading `relapse cleanup`'s output.
    pub describe: String,
    /// The injector's revert instructions (JSON).
    pub revert: serde_json::Value,
}

/// The harness process that owns a run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), so a
    /// recycled pid is not mistaken for the owner.
    pub start_time: Option<u64>,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start_time: process_start_time(pid),
        }
    }

    /// Whether the owner is still running (the same process, not a recycled pid).
    pub fn is_alive(&self) -> bool {
        match (process_start_time(self.pid), self.start_time) {
            (None, _) => false,
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
        }
    }
}

/// A process's start time from `/proc/PID/stat` (field 22, in clock ticks since boot).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Where journals live unless told otherwise: `$RELAPSE_STATE_DIR`, else `$XDG_STATE_HOME/relapse`,
/// else `$HOME/.local/state/relapse`, else `/var/lib/relapse`.
pub fn default_state_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = from_env("RELAPSE_STATE_DIR") {
        return dir;
    }
    if let Some(dir) = from_env("XDG_STATE_HOME") {
        return dir.join("relapse");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".local/state/relapse");
    }
    PathBuf::from("/var/lib/relapse")
}

/// Writes `bytes` to `path` atomically and durably.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let dir = path.parent().expect("journal paths have a parent");
    let temporary = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry")
    ));
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The journal of one harness process. Entries are numbered in the order they were recorded.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    next: u64,
}

impl Journal {
    /// Creates this process's run directory under `state_dir`.
    pub fn create(state_dir: &Path) -> Result<Journal, JournalError> {
        Journal::create_at(&Journal::next_dir(state_dir)?)
    }

    /// Where the next run of this process will keep its journal, under `state_dir` (whose
    /// `runs` directory is made if missing). Known before the run directory exists, so that its
    /// guardian can be watching before there is anything to leave behind.
    pub fn next_dir(state_dir: &Path) -> Result<PathBuf, JournalError> {
        let runs = state_dir.join("runs");
        fs::create_dir_all(&runs).map_err(io_error(&runs))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(runs.join(format!("{}-{nanos}", std::process::id())))
    }

    /// Creates the run directory `dir` (from [`Journal::next_dir`]) with its owner record.
    pub fn create_at(dir: &Path) -> Result<Journal, JournalError> {
        let owner = Owner::current();
        fs::create_dir(dir).map_err(io_error(dir))?;
        let owner_json = serde_json::to_vec(&owner).expect("an owner always serialises");
        write_durably(&dir.join("owner.json"), &owner_json)?;
        if let Some(runs) = dir.parent() {
            sync_dir(runs)?;
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            next: 1,
        })
    }

    /// The run directory, which the guardian watches.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records a revert before the fault is injected; returns the entry's id.
    pub fn record(&mut self, entry: &Entry) -> Result<u64, JournalError> {
        let id = self.next;
        self.next += 1;
        let bytes = serde_json::to_vec_pretty(entry).expect("an entry always serialises");
        write_durably(&entry_path(&self.dir, id), &bytes)?;
        Ok(id)
    }

    /// Removes an entry once its revert is confirmed. Removing a missing entry succeeds: someone
    /// else (the guardian, `cleanup`) may have reverted it first.
    pub fn remove(&mut self, id: u64) -> Result<(), JournalError> {
        remove_entry(&self.dir, id)
    }
}

fn entry_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:06}.json"))
}

/// Removes entry `id` of the run in `dir`; a missing entry is not an error.
pub fn remove_entry(dir: &Path, id: u64) -> Result<(), JournalError> {
    let path = entry_path(dir, id);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// A run directory found under a state directory.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    /// `None` when `owner.json` is missing or unreadable (a crash while the run was created).
    pub owner: Option<Owner>,
}

impl Run {
    /// The pending entries, oldest first, with their ids.
    pub fn pending(&self) -> Result<Vec<(u64, Entry)>, JournalError> {
        pending(&self.dir)
    }

    /// Removes the run directory once it holds no entry; leaves it otherwise.
    pub fn remove_if_empty(&self) -> Result<bool, JournalError> {
        if !pending(&self.dir)?.is_empty() {
            return Ok(false);
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io_error(&self.dir)(e)),
        }
    }
}

/// The pending entries of the run in `dir`, oldest first.
pub fn pending(dir: &Path) -> Result<Vec<(u64, Entry)>, JournalError> {
    let mut entries = Vec::new();
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for item in listing {
        let path = item.map_err(io_error(dir))?.path();
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|_| path.extension().is_some_and(|e| e == "json"))
        else {
            continue;
        };
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let entry = serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        entries.push((id, entry));
    }
    entries.sort_by_key(|(id, _)| *id);
    Ok(entries)
}

/// Every run directory under `state_dir`.
pub fn runs(state_dir: &Path) -> Result<Vec<Run>, JournalError> {
    let dir = state_dir.join("runs");
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir)(e)),
    };
    let mut runs = Vec::new();
    for item in listing {
        let path = item.map_err(io_error(&dir))?.path();
        if !path.is_dir() {
            continue;
        }
        let owner = fs::read(path.join("owner.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        runs.push(Run { dir: path, owner });
    }
    runs.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_directory_is_named_before_it_exists() {
        let state = tempfile::tempdir().unwrap();
        let dir = Journal::next_dir(state.path()).unwrap();
        // Named, not made: a guardian can watch it before there is anything to leave behind.
        assert!(!dir.exists());
        assert!(dir.starts_with(state.path().join("runs")));
        let journal = Journal::create_at(&dir).unwrap();
        assert_eq!(journal.dir(), dir);
        assert!(dir.join("owner.json").exists());
        // A run directory that was never made is already clean.
        let never = Journal::next_dir(state.path()).unwrap();
        assert!(pending(&never).unwrap().is_empty());
    }

    fn entry(n: u32) -> Entry {
        Entry {
            kind: "process_freeze".into(),
            fault: format!("f{n}"),
            describe: "freeze pid 4242".into(),
            revert: serde_json::json!({ "pid": 4242 + n }),
        }
    }

    #[test]
    fn records_and_removes_entries_in_order() {
        let state = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(state.path()).unwrap();
        let first = journal.record(&entry(1)).unwrap();
        let second = journal.record(&entry(2)).unwrap();
        let found = pending(journal.dir()).unwrap();
        assert_eq!(found, vec![(first, entry(1)), (second, entry(2))]);
        journal.remove(first).unwrap();
        assert_eq!(pending(journal.dir()).unwrap(), vec![(second, entry(2))]);
        // Removing twice is fine: the guardian or cleanup may have been first.
        journal.remove(first).unwrap();
        journal.remove(second).unwrap();
        assert!(pending(journal.dir()).unwrap().is_empty());
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(journal.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["owner.json"]);
    }

    #[test]
    fn runs_know_their_owner_and_whether_it_lives() {
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::create(state.path()).unwrap();
        let found = runs(state.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].dir, journal.dir());
        let owner = found[0].owner.clone().unwrap();
        assert_eq!(owner, Owner::current());
        assert!(owner.is_alive());
        // The same pid with another start time is a recycled pid: not the owner.
        let recycled = Owner {
            pid: owner.pid,
            start_time: owner.start_time.map(|t| t + 1),
        };
        assert!(!recycled.is_alive());
        assert!(found[0].remove_if_empty().unwrap());
        assert!(runs(state.path()).unwrap().is_empty());
    }

    #[test]
    fn a_run_with_pending_entries_is_not_removed() {
        let state = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(state.path()).unwrap();
        journal.record(&entry(1)).unwrap();
        let run = &runs(state.path()).unwrap()[0];
        assert!(!run.remove_if_empty().unwrap());
        assert_eq!(run.pending().unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_entry_is_reported_with_its_path() {
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::create(state.path()).unwrap();
        fs::write(journal.dir().join("000007.json"), b"{not json").unwrap();
        let err = pending(journal.dir()).unwrap_err().to_string();
        assert!(err.contains("000007.json"), "{err}");
    }

    #[test]
    fn a_missing_state_dir_has_no_runs() {
        let state = tempfile::tempdir().unwrap();
        assert!(runs(&state.path().join("nowhere")).unwrap().is_empty());
    }
}
