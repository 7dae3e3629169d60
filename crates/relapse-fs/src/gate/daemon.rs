//! The gate daemon: `gate SOURCE MOUNTPOINT`, its own session, controlled over stdin/stdout.
//!
//! Protocol (one line each way; every request `ID VERB ARGS…`, every answer `ID ok …` or
//! `ID err …`, answers in any order):
//!
//! - at start it prints `0 ok started FSNAME` and waits for `ID mount`; EOF before that ends it
//!   with nothing mounted;
//! - `ID mount` mounts SOURCE at MOUNTPOINT (type `fuse`, source FSNAME = `relapse-gate:PID:START_TIME`) and
//!   answers `ID ok mounted MAJOR:MINOR`;
//! - `ID pass`, `ID stall SCOPE`, `ID latency SCOPE DELAY_US [JITTER_US]`, `ID error SCOPE
//!   ERRNO` switch the mode and answer `ID ok MODE released=N`;
//! - `ID wait-parked MS [PID]` answers `ID ok parked=N pid=P OP` as soon as a request (of PID)
//!   is parked, or `ID err …` after MS;
//! - `ID status` answers `ID ok MODE parked=N delayed=M parked_total=T failed_open=B`.
//!
//! EOF on stdin (relapse ended or was killed) fails the gate open: `pass`, every parked and
//! delayed request answered, for good. The daemon goes on passing through until the file
//! system is unmounted, then exits.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionACL};

use super::mode::GateMode;
use super::passthrough::GateFs;
use super::switch::Switch;
use super::{fsname, proc_start_time};
use crate::FsError;

/// Stdout is the protocol with relapse: one writer at a time, whole lines.
#[derive(Clone)]
struct Out(Arc<Mutex<()>>);

impl Out {
    fn say(&self, line: &str) {
        let _held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        // After relapse died nobody reads (EPIPE; Rust ignores SIGPIPE): fine.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

pub(crate) fn daemon_main(source: &Path, mountpoint: &Path) -> Result<(), FsError> {
    // Its own session: a signal to relapse's process group (Ctrl-C, GNU timeout) must not end
    // the process that serves a mounted file system. Fails only for a group leader, which a
    // freshly spawned child is not.
    let _ = nix::unistd::setsid();
    // Modes of new files are the caller's mode & ~umask, computed here; the daemon's own umask
    // must not mask them again.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let source =
        std::fs::canonicalize(source).map_err(FsError::io(source.display().to_string()))?;
    let mountpoint =
        std::fs::canonicalize(mountpoint).map_err(FsError::io(mountpoint.display().to_string()))?;
    if !source.is_dir() {
        return Err(FsError::Gate(format!(
            "{} is not a directory",
            source.display()
        )));
    }
    let pid = std::process::id();
    let start = proc_start_time(pid)
        .ok_or_else(|| FsError::Gate("cannot read my own /proc/self/stat".into()))?;
    let name = fsname(pid, start);
    let out = Out(Arc::new(Mutex::new(())));
    out.say(&format!("0 ok started {name}"));

    let mut lines = std::io::BufReader::new(std::io::stdin()).lines();
    let mount_id = loop {
        match lines.next() {
            Some(Ok(line)) => {
                let mut words = line.split_whitespace();
                let (Some(id), Some(verb)) = (words.next(), words.next()) else {
                    continue;
                };
                if verb == "mount" {
                    break id.to_string();
                }
                out.say(&format!("{id} err not mounted yet: expected mount"));
            }
            // Relapse went away before the mount: nothing to serve, nothing to undo.
            _ => return Ok(()),
        }
    };

    let switch = Switch::start();
    let fs = GateFs::new(source.clone(), switch.clone())
        .map_err(FsError::io(format!("stat {}", source.display())))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(name.clone()),
        // The kernel checks permissions against the mirrored modes: the daemon is root.
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    // allow_other: the services under test rarely run as root.
    config.acl = SessionACL::All;
    // Two readers of /dev/fuse: one slow pass-through request does not hold up the others.
    config.n_threads = Some(2);
    let session = match Session::new(fs, &mountpoint, &config) {
        Ok(session) => session,
        Err(e) => {
            out.say(&format!(
                "{mount_id} err mounting {} at {}: {e}",
                source.display(),
                mountpoint.display()
            ));
            return Err(FsError::Gate(format!(
                "mounting at {}: {e}",
                mountpoint.display()
            )));
        }
    };
    let dev = crate::mounts::mounts()
        .ok()
        .and_then(|all| all.into_iter().rfind(|m| m.source == name))
        .map(|m| {
            format!(
                "{}:{}",
                nix::sys::stat::major(m.dev),
                nix::sys::stat::minor(m.dev)
            )
        })
        .unwrap_or_else(|| "?".into());
    out.say(&format!("{mount_id} ok mounted {dev}"));

    let control_out = out.clone();
    let control_switch = switch.clone();
    std::thread::Builder::new()
        .name("gate-control".into())
        .spawn(move || control(lines, &control_switch, &control_out))
        .map_err(FsError::io("starting the control thread"))?;

    // Returns once the file system is unmounted (or its connection aborted).
    session
        .run()
        .map_err(FsError::io(format!("serving {}", mountpoint.display())))
}

fn control(lines: impl Iterator<Item = std::io::Result<String>>, switch: &Arc<Switch>, out: &Out) {
    for line in lines {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let [id, verb, args @ ..] = words.as_slice() else {
            continue;
        };
        let id = id.to_string();
        match *verb {
            "status" => {
                let s = switch.snapshot();
                out.say(&format!(
                    "{id} ok {} parked={} delayed={} parked_total={} failed_open={}",
                    s.mode,
                    s.parked.len(),
                    s.delayed,
                    s.parked_total,
                    s.failed_open
                ));
            }
            "wait-parked" => {
                let within = args.first().and_then(|ms| ms.parse().ok());
                let pid = args.get(1).map(|p| p.parse::<u32>());
                let (Some(within), None | Some(Ok(_))) = (within, &pid) else {
                    out.say(&format!("{id} err usage: wait-parked MS [PID]"));
                    continue;
                };
                let pid = pid.and_then(Result::ok);
                // On its own thread: the control loop must keep reading, or it would miss the
                // EOF that fails the gate open.
                let switch = switch.clone();
                let out = out.clone();
                std::thread::spawn(move || {
                    match switch.wait_parked(pid, Duration::from_millis(within)) {
                        Some((n, what, pid)) => {
                            out.say(&format!("{id} ok parked={n} pid={pid} {what}"))
                        }
                        None => out.say(&format!(
                            "{id} err nothing{} parked within {within} ms",
                            pid.map(|p| format!(" of pid {p}")).unwrap_or_default()
                        )),
                    }
                });
            }
            "mount" => out.say(&format!("{id} err mounted already")),
            _ => match GateMode::parse(&words[1..]) {
                Ok(mode) => match switch.set_mode(mode) {
                    Ok(released) => out.say(&format!("{id} ok {mode} released={released}")),
                    Err(e) => out.say(&format!("{id} err {e}")),
                },
                Err(e) => out.say(&format!("{id} err {e}")),
            },
        }
    }
    let released = switch.fail_open();
    out.say(&format!("control closed: failed open, released={released}"));
}
