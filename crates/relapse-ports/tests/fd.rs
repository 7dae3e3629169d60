//! FdExhaustion against real processes this test starts (and ends, by their own handles).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use relapse_core::fault::decode_record;
use relapse_core::fault::{Fault, FaultError, FaultGuard};
use relapse_ports::fd::{revert_record, FdError, FdExhaustion, FdRecord};

/// For each line on stdin, opens a file and a socket and keeps both open, then answers
/// `file=<result> socket=<result>`, a result being `ok` or `<errno name>/<errno number>`.
/// Line commands: `close` closes the first descriptor it holds instead, leaving a hole in its
/// descriptor table, and answers `closed`.
const SCRIPT: &str = r#"
import errno, socket, sys
held = []
def attempt(make):
    try:
        held.append(make())
        return "ok"
    except OSError as e:
        return "%s/%d" % (errno.errorcode.get(e.errno, "?"), e.errno)
for line in sys.stdin:
    if line.strip() == "close":
        held.pop(0).close()
        print("closed", flush=True)
        continue
    f = attempt(lambda: open("/dev/null"))
    s = attempt(lambda: socket.socket())
    print("file=%s socket=%s" % (f, s), flush=True)
"#;

/// What the target answered to one request.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    file: String,
    socket: String,
}

const OK: &str = "ok";
/// EMFILE is 24 on Linux: the process has reached its descriptor limit.
const EMFILE: &str = "EMFILE/24";

/// A Python process that opens descriptors on request; killed and reaped on drop.
struct Target {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Target {
    fn start() -> Target {
        let mut child = Command::new("python3")
            .args(["-u", "-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is on the machine");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut target = Target {
            child,
            stdin,
            stdout,
        };
        // The first answer also says the script is running and waiting for the next line, so
        // its descriptor table no longer changes by itself.
        assert_eq!(target.request(), both(OK), "before the fault");
        target
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert!(!answer.is_empty(), "the target closed its output");
        answer.trim_end().to_string()
    }

    /// Asks the target to open a file and a socket.
    fn request(&mut self) -> Answer {
        let answer = self.line("open");
        let mut parts = answer.split(' ');
        let mut field = |name: &str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .unwrap_or_else(|| panic!("unexpected answer \"{answer}\""))
                .to_string()
        };
        Answer {
            file: field("file="),
            socket: field("socket="),
        }
    }

    /// The soft and hard descriptor limits, as the kernel shows them in /proc/PID/limits.
    fn limits(&self) -> (String, String) {
        limits_of(self.pid())
    }

    /// Ends the process and waits for it.
    fn end(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.end();
    }
}

fn both(result: &str) -> Answer {
    Answer {
        file: result.to_string(),
        socket: result.to_string(),
    }
}

fn limits_of(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

fn record(fault: &FdExhaustion) -> FdRecord {
    let instructions = fault.revert_instructions();
    assert_eq!(instructions.kind, "fd_exhaustion");
    instructions.decode().unwrap()
}

#[tokio::test]
async fn exhausts_and_restores_descriptors() {
    let mut target = Target::start();
    let before = target.limits();
    let mut fault = FdExhaustion::new(target.pid(), 0).unwrap();
    let journaled = record(&fault);
    assert_eq!(journaled.pid, target.pid());
    assert_eq!(journaled.soft.to_string(), before.0);
    assert_eq!(journaled.hard.to_string(), before.1);

    let effective = fault.inject().await.unwrap();
    assert!(
        effective.detail.starts_with(&format!(
            "pid {}: RLIMIT_NOFILE soft {} -> ",
            target.pid(),
            before.0
        )),
        "{}",
        effective.detail
    );
    assert!(
        effective.detail.ends_with("fds open)"),
        "{}",
        effective.detail
    );
    assert_eq!(target.request(), both(EMFILE));
    // Only the soft limit is lowered.
    let during = target.limits();
    assert_ne!(during.0, before.0);
    assert_eq!(during.1, before.1);
    // Once applied, the instructions still name the limits from before.
    assert_eq!(record(&fault), journaled);

    let reverted = fault.revert().await.unwrap();
    assert!(reverted.at >= effective.at);
    assert_eq!(target.limits(), before, "{}", reverted.detail);
    assert_eq!(target.request(), both(OK));
    // Idempotent: a second revert succeeds and changes nothing.
    fault.revert().await.unwrap();
    assert_eq!(target.limits(), before);
    assert_eq!(target.request(), both(OK));
}

#[tokio::test]
async fn leaves_exactly_the_headroom() {
    let mut target = Target::start();
    let mut fault = FdExhaustion::new(target.pid(), 1).unwrap();
    fault.inject().await.unwrap();
    // One more descriptor: the file gets it, the socket does not.
    assert_eq!(
        target.request(),
        Answer {
            file: OK.into(),
            socket: EMFILE.into()
        }
    );
    fault.revert().await.unwrap();
    assert_eq!(target.request(), both(OK));
}

#[tokio::test]
async fn a_hole_in_the_descriptor_table_is_no_headroom() {
    let mut target = Target::start();
    target.request();
    // Closes the first file opened: a free number below the highest open one.
    assert_eq!(target.line("close"), "closed");
    let mut fault = FdExhaustion::new(target.pid(), 0).unwrap();
    fault.inject().await.unwrap();
    assert_eq!(target.request(), both(EMFILE));
    fault.revert().await.unwrap();
    assert_eq!(target.request(), both(OK));
}

#[tokio::test]
async fn the_journal_record_alone_restores_the_limits() {
    let mut target = Target::start();
    let before = target.limits();
    let json = {
        let mut fault = FdExhaustion::new(target.pid(), 0).unwrap();
        let json = record(&fault);
        fault.inject().await.unwrap();
        json
        // The fault goes out of scope here without a revert: dropping it reverts nothing (only
        // a FaultGuard does), as when the harness dies.
    };
    assert_eq!(target.request(), both(EMFILE));

    let done = revert_record(&json).unwrap();
    assert!(done.contains("restored"), "{done}");
    assert_eq!(target.limits(), before);
    assert_eq!(target.request(), both(OK));
    // Idempotent.
    revert_record(&json).unwrap();
    assert_eq!(target.limits(), before);
}

#[tokio::test]
async fn dropping_an_applied_guard_restores_the_limits() {
    let mut target = Target::start();
    let before = target.limits();
    let mut guard = FaultGuard::new(Box::new(FdExhaustion::new(target.pid(), 0).unwrap()));
    guard.inject().await.unwrap();
    assert_eq!(target.request(), both(EMFILE));
    // The guard's drop path: revert_now.
    drop(guard);
    assert_eq!(target.limits(), before);
    assert_eq!(target.request(), both(OK));
}

#[tokio::test]
async fn a_recycled_pid_is_not_touched() {
    let mut target = Target::start();
    let before = target.limits();
    let mut fault = FdExhaustion::new(target.pid(), 0).unwrap();
    let mut stale = record(&fault);
    stale.start_time += 1;
    fault.inject().await.unwrap();
    let during = target.limits();

    let done = revert_record(&stale).unwrap();
    assert!(done.contains("another process"), "{done}");
    assert_eq!(target.limits(), during);
    assert_eq!(target.request(), both(EMFILE));

    fault.revert().await.unwrap();
    assert_eq!(target.limits(), before);
}

#[tokio::test]
async fn an_exited_target_is_reported_and_needs_no_revert() {
    let mut target = Target::start();
    let pid = target.pid();
    let mut fault = FdExhaustion::new(pid, 0).unwrap();
    let json = record(&fault);
    target.end();
    assert!(matches!(
        fault.inject().await,
        Err(FaultError::Target(reason)) if reason.contains("exited")
    ));
    let reverted = fault.revert().await.unwrap();
    assert!(
        reverted.detail.contains(&pid.to_string()),
        "{}",
        reverted.detail
    );
    let done = revert_record(&json).unwrap();
    assert!(done.contains("exited"), "{done}");
    assert!(matches!(
        FdExhaustion::new(pid, 0),
        Err(FdError::NoSuchProcess(p)) if p == pid
    ));
}

#[tokio::test]
async fn a_revert_after_the_target_exited_succeeds() {
    let mut target = Target::start();
    let mut fault = FdExhaustion::new(target.pid(), 0).unwrap();
    fault.inject().await.unwrap();
    target.end();
    let reverted = fault.revert().await.unwrap();
    assert!(reverted.detail.contains("exited"), "{}", reverted.detail);
}

#[test]
fn refuses_init_itself_and_missing_processes() {
    assert_eq!(FdExhaustion::new(0, 0).err(), Some(FdError::Init(0)));
    assert_eq!(FdExhaustion::new(1, 0).err(), Some(FdError::Init(1)));
    let me = std::process::id();
    assert_eq!(FdExhaustion::new(me, 0).err(), Some(FdError::Harness(me)));
    // Pids above pid_max (at most 2^22 on Linux) never exist.
    assert_eq!(
        FdExhaustion::new(5_000_000, 0).err(),
        Some(FdError::NoSuchProcess(5_000_000))
    );
    assert_eq!(
        FdExhaustion::new(u32::MAX, 0).err(),
        Some(FdError::NoSuchProcess(u32::MAX))
    );
}

#[test]
fn an_unreadable_record_is_an_error() {
    let err = decode_record::<FdRecord>(serde_json::json!({"pid": 4242})).unwrap_err();
    assert!(err.to_string().contains("fd_exhaustion"), "{err}");
}
