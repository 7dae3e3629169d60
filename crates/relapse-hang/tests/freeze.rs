//! ProcessFreeze against real processes this test starts (and ends, by their own handles).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use relapse_core::fault::decode_record;
use relapse_core::fault::{Fault, FaultGuard};
use relapse_hang::{is_stopped, revert_record, FreezeRecord, ProcessFreeze, TargetError};

/// A child that lives until killed; killed and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(own_group: bool) -> Sleeper {
        let mut command = Command::new("sh");
        // Two processes in one group: the shell and a sleep it waits for.
        command.args(["-c", "sleep 60 & wait"]).stdin(Stdio::null());
        if own_group {
            command.process_group(0);
        }
        Sleeper(command.spawn().expect("sh is on every machine"))
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        // Resume first so the group's sleep is not left stopped, then end the group we made.
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*pid as i32))).ok()
                == Some(nix::unistd::Pid::from_raw(pgid as i32))
        })
        .collect()
}

#[tokio::test]
async fn freezes_and_resumes_a_process() {
    let child = Sleeper::start(true);
    let mut freeze = ProcessFreeze::new(child.pid(), false).unwrap();
    let effective = freeze.inject().await.unwrap();
    assert_eq!(is_stopped(child.pid()), Some(true), "{}", effective.detail);
    let reverted = freeze.revert().await.unwrap();
    assert_eq!(is_stopped(child.pid()), Some(false));
    assert!(reverted.at >= effective.at);
    // Idempotent: a second revert succeeds and leaves it running.
    freeze.revert().await.unwrap();
    assert_eq!(is_stopped(child.pid()), Some(false));
}

#[tokio::test]
async fn freezes_a_whole_process_group() {
    let child = Sleeper::start(true);
    // Wait until the shell has started its sleep, so the group has two members.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while members(child.pid()).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "sleep never started");
        tokio::task::yield_now().await;
    }
    let mut freeze = ProcessFreeze::new(child.pid(), true).unwrap();
    freeze.inject().await.unwrap();
    for pid in members(child.pid()) {
        assert_eq!(is_stopped(pid), Some(true), "member {pid}");
    }
    freeze.revert().await.unwrap();
    for pid in members(child.pid()) {
        assert_eq!(is_stopped(pid), Some(false), "member {pid}");
    }
}

#[tokio::test]
async fn dropping_the_guard_resumes_the_process() {
    let child = Sleeper::start(true);
    let mut guard = FaultGuard::new(Box::new(ProcessFreeze::new(child.pid(), false).unwrap()));
    guard.inject().await.unwrap();
    assert_eq!(is_stopped(child.pid()), Some(true));
    drop(guard);
    // SIGCONT is delivered synchronously to a stopped process; the state follows at once, but
    // give the kernel a bounded moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while is_stopped(child.pid()) == Some(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "still stopped after the guard dropped"
        );
        tokio::task::yield_now().await;
    }
}

#[test]
fn refuses_the_harness_own_process_group() {
    // A child in our own group: freezing its group would freeze relapse too.
    let child = Sleeper::start(false);
    let err = ProcessFreeze::new(child.pid(), true).err().unwrap();
    assert!(matches!(err, TargetError::HarnessGroup { .. }), "{err}");
    // Freezing just the child is fine.
    assert!(ProcessFreeze::new(child.pid(), false).is_ok());
}

#[tokio::test]
async fn a_process_that_exits_while_frozen_reverts_cleanly() {
    let mut child = Sleeper::start(true);
    let mut freeze = ProcessFreeze::new(child.pid(), false).unwrap();
    freeze.inject().await.unwrap();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let reverted = freeze.revert().await.unwrap();
    assert!(
        reverted.detail.contains("has exited"),
        "{}",
        reverted.detail
    );
}

#[tokio::test]
async fn a_journaled_freeze_is_resumed_from_its_record_alone() {
    let child = Sleeper::start(true);
    let mut freeze = ProcessFreeze::new(child.pid(), false).unwrap();
    let instructions = freeze.revert_instructions();
    assert_eq!(instructions.kind, "process_freeze");
    freeze.inject().await.unwrap();
    assert_eq!(is_stopped(child.pid()), Some(true));
    // Another process would have only the record. A bare ProcessFreeze does not resume on drop
    // (its FaultGuard does), so letting it go leaves the process stopped, as a crash would.
    let _ = freeze;
    assert_eq!(is_stopped(child.pid()), Some(true));
    let record: FreezeRecord = instructions.decode().unwrap();
    let done = revert_record(&record).unwrap();
    assert!(done.contains("resumed"), "{done}");
    assert_eq!(is_stopped(child.pid()), Some(false));
    // Idempotent.
    revert_record(&record).unwrap();
}

#[test]
fn a_recycled_pid_is_not_signalled() {
    let child = Sleeper::start(true);
    let record = serde_json::json!({"pid": child.pid(), "group": null, "start_time": 1});
    let record: FreezeRecord = decode_record(record).unwrap();
    let done = revert_record(&record).unwrap();
    assert!(done.contains("has exited; nothing to resume"), "{done}");
    let foreign = decode_record::<FreezeRecord>(serde_json::json!("{")).unwrap_err();
    assert!(foreign.to_string().contains("unreadable"), "{foreign}");
}
