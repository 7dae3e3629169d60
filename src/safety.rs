//! The harness never becomes the incident: every fault's revert is journaled before injection
//! (relapse-journal), a guardian process reverts what the journal still holds if the harness dies,
//! and `relapse cleanup` does the same by hand.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relapse_core::fault::{LogError, RevertError, RevertInstructions, RevertLog};
use relapse_journal::{Entry, Journal, JournalError, Run};

/// Executes a journaled revert with the injector that knows its kind (the kind table).
pub fn revert_entry(entry: &Entry) -> Result<String, RevertError> {
    crate::kinds::revert_entry(&entry.kind, entry.revert.clone())
}

/// The engine's view of the journal, shared by the runs of one `relapse run`.
#[derive(Clone)]
pub struct JournalLog(Arc<Mutex<Journal>>);

impl JournalLog {
    pub fn new(journal: Journal) -> JournalLog {
        JournalLog(Arc::new(Mutex::new(journal)))
    }

    pub fn dir(&self) -> PathBuf {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dir()
            .to_path_buf()
    }
}

impl RevertLog for JournalLog {
    fn record(
        &mut self,
        fault: &str,
        describe: &str,
        instructions: &RevertInstructions,
    ) -> Result<u64, LogError> {
        let entry = Entry {
            kind: instructions.kind.to_string(),
            fault: fault.to_string(),
            describe: describe.to_string(),
            revert: instructions.record.clone(),
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&entry)
            .map_err(|e| LogError(e.into()))
    }

    fn remove(&mut self, id: u64) -> Result<(), LogError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .map_err(|e| LogError(e.into()))
    }
}

/// What cleaning one run did.
#[derive(Debug)]
pub struct Cleaned {
    pub run: PathBuf,
    /// `(fault, what it did, result)` for every pending entry.
    pub reverts: Vec<(String, String, Result<String, RevertError>)>,
    /// Left alone because its harness still runs.
    pub skipped_live_owner: Option<u32>,
}

/// Reverts every pending entry of `run`, oldest last (undo in reverse order), removing each one
/// that was reverted, and the run directory once empty.
pub fn clean_run(run: &Run) -> Result<Cleaned, JournalError> {
    let mut reverts = Vec::new();
    let mut pending = run.pending()?;
    pending.reverse();
    for (id, entry) in pending {
        let result = revert_entry(&entry);
        if result.is_ok() {
            relapse_journal::remove_entry(&run.dir, id)?;
        }
        reverts.push((entry.fault, entry.describe, result));
    }
    run.remove_if_empty()?;
    Ok(Cleaned {
        run: run.dir.clone(),
        reverts,
        skipped_live_owner: None,
    })
}

/// `relapse cleanup`: cleans every run under `state_dir` whose harness is gone (or every run,
/// with `force`). Idempotent: a second call finds nothing.
pub fn cleanup(state_dir: &Path, force: bool) -> Result<Vec<Cleaned>, JournalError> {
    let mut done = Vec::new();
    for run in relapse_journal::runs(state_dir)? {
        match &run.owner {
            Some(owner) if owner.is_alive() && !force => done.push(Cleaned {
                run: run.dir.clone(),
                reverts: Vec::new(),
                skipped_live_owner: Some(owner.pid),
            }),
            _ => done.push(clean_run(&run)?),
        }
    }
    Ok(done)
}

/// The guardian of one run directory, as seen from the harness: a separate process holding the
/// read end of a pipe whose write end only the harness holds. When the harness dies — however it
/// dies, SIGKILL included — the kernel closes the write end and the guardian reverts what the
/// journal still holds.
pub struct Guardian {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Guardian {
    /// Starts `program args… RUN_DIR` as the guardian, in its own process group so that a
    /// Ctrl-C at the terminal, meant for the harness, does not reach it.
    pub fn spawn(program: &Path, args: &[String], run_dir: &Path) -> std::io::Result<Guardian> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(program)
            .args(args)
            .arg(run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Guardian { child, pipe })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the guardian is still watching.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Tells the guardian the harness is done (by closing the pipe) and waits, bounded, for it to
    /// clear the run directory.
    pub fn finish(mut self, within: Duration) {
        drop(self.pipe.take());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                // The guardian needs only milliseconds; poll briefly rather than block without
                // a bound on a process we cannot otherwise wait on with a timeout.
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        tracing::warn!(
            pid = self.child.id(),
            "the guardian did not finish in time; it carries on alone"
        );
    }
}

/// The guardian process's main: waits for the harness to close the pipe (stdin), then reverts
/// what the run's journal still holds. Terminal signals are blocked: the guardian must outlive
/// the harness it guards. Returns the exit code and the lines to print (the CLI prints them).
pub fn guardian_main(run_dir: &Path) -> (u8, Vec<String>) {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut lines = Vec::new();
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        blocked.add(signal);
    }
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None) {
        lines.push(format!(
            "relapse guardian: cannot block terminal signals: {e}"
        ));
    }
    // Read until end of file: nothing is ever written; EOF means the harness is gone or done.
    let mut buffer = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let run = Run {
        dir: run_dir.to_path_buf(),
        owner: None,
    };
    match clean_run(&run) {
        Ok(cleaned) => {
            let mut failed = false;
            for (fault, describe, result) in &cleaned.reverts {
                match result {
                    Ok(done) => lines.push(format!(
                        "relapse guardian: reverted \"{fault}\" ({describe}): {done}"
                    )),
                    Err(e) => {
                        failed = true;
                        lines.push(format!("relapse guardian: could not revert \"{fault}\" ({describe}): {e}; run `relapse cleanup`"));
                    }
                }
            }
            (u8::from(failed) * crate::exit::INCONCLUSIVE, lines)
        }
        Err(e) => {
            lines.push(format!("relapse guardian: {e}; run `relapse cleanup`"));
            (crate::exit::INCONCLUSIVE, lines)
        }
    }
}
