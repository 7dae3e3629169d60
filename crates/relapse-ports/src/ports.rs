//! `port_exhaustion`: take a network namespace's ephemeral ports away from `connect()`, so that a
//! service there can open no outgoing connection — the iPaper incident, where a leaking service
//! exhausted the host's ports and the server looked decommissioned.
//!
//! Modes:
//! - `reserve`: bind ports of the ephemeral range (all, or part of it) without listening. Linux
//!   never picks a port held by `bind()` for an implicit `connect()` bind, so with the whole range
//!   reserved `connect()` fails with EADDRNOTAVAIL. Fast and exact: the benchmarkable mode.
//! - `leak`: open connections to a destination and hold them, at a rate — what the buggy
//!   service did. Each holds one ephemeral port.
//! - `time_wait`: open and close short connections at a rate; each leaves a TIME_WAIT socket that
//!   holds its port for a minute.
//!
//! Every socket lives in this (the harness's) process, created by a thread that entered the
//! target namespace: if the harness dies, the kernel closes them and the ports come back.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::time::Instant;

/// The fault kind, as scenarios and the journal spell it.
pub const KIND: &str = "port_exhaustion";

use crate::netns;

/// How much of the ephemeral range `reserve` takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Every free port: `connect()` fails.
    All,
    /// This share of the range (0 to 1).
    Fraction(f64),
    /// All but this many ports: with TIME_WAIT reuse, a trickle of connections still succeeds.
    LeaveFree(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Reserve(Amount),
    /// Hold `count` connections to `destination`, opening `rate` per second.
    Leak {
        destination: SocketAddr,
        rate: u32,
        count: u32,
    },
    /// Open and close `count` connections to `destination`, `rate` per second.
    TimeWait {
        destination: SocketAddr,
        rate: u32,
        count: u32,
    },
}

/// Why a port exhaustion could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error("refusing to exhaust relapse's own network namespace: name another (netns, pid, or the demo host), or set allow_own_namespace = true")]
    OwnNamespace,
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("cannot read the ephemeral port range of {}: {reason}", path.display())]
    Range { path: PathBuf, reason: String },
    #[error("{0}")]
    Limit(String),
}

/// The ephemeral port range of the namespace at `path`.
pub fn ephemeral_range(path: &Path) -> Result<(u16, u16), PortsError> {
    let range_error = |reason: String| PortsError::Range {
        path: path.to_path_buf(),
        reason,
    };
    // /proc/sys/net shows the namespace of the thread that reads it.
    let text = netns::within(path, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
    })?
    .map_err(|e| range_error(e.to_string()))?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Ok((low, high)),
        _ => Err(range_error(format!("unexpected contents {text:?}"))),
    }
}

/// Makes sure this process may hold `extra` more descriptors, raising RLIMIT_NOFILE if needed.
pub fn ensure_descriptors(extra: u64) -> Result<(), PortsError> {
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    // Headroom for what the harness itself opens meanwhile (probes, journal, logs).
    let needed = open + extra + 256;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| PortsError::Limit(format!("cannot read RLIMIT_NOFILE: {e}")))?;
    if soft >= needed {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard.max(needed)).map_err(|e| {
        PortsError::Limit(format!(
            "holding {extra} ports needs {needed} file descriptors, but RLIMIT_NOFILE is {soft} (hard {hard}) and raising it failed: {e}; raise the hard limit (ulimit -Hn) or run with CAP_SYS_RESOURCE"
        ))
    })
}

/// Binds ports of `range` in the current thread's namespace until `count` are held, skipping
/// ports in use. Returns the sockets.
fn bind_ports(range: (u16, u16), count: usize) -> Vec<Socket> {
    let mut held = Vec::with_capacity(count);
    for port in range.0..=range.1 {
        if held.len() >= count {
            break;
        }
        if let Some(socket) = bind_one(port) {
            held.push(socket);
        }
    }
    held
}

/// Binds one port on the wildcard address, without listening; `None` if it is in use (or no
/// descriptor is left).
fn bind_one(port: u16) -> Option<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
    // SO_REUSEADDR lets a port be taken beside sockets that also set it; the port stays
    // unavailable to connect() all the same, because it is bound.
    let _ = socket.set_reuse_address(true);
    socket
        .bind(&SockAddr::from(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        )))
        .ok()?;
    Some(socket)
}

/// Whether an implicit-bind `connect()` in the current thread's namespace fails for want of a
/// port. The destination is a listener of this thread's own on loopback, below the ephemeral
/// range: if a port is free the connect succeeds, if none is it fails before sending anything.
fn connect_starved(range: (u16, u16)) -> Result<bool, String> {
    let listener = (1..range.0)
        .rev()
        .find_map(|port| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok())
        .ok_or("no port below the ephemeral range to listen on")?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
        Ok(stream) => {
            // Reset rather than close: a closed probe connection would park its port in
            // TIME_WAIT, where the next connect() could reuse it.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            Ok(false)
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => Ok(true),
        Err(e) => Err(format!("connect() to {target} failed otherwise: {e}")),
    }
}

/// The journal's record: sockets die with the harness, so there is nothing to undo from outside;
/// the record says where the fault was, for people reading the journal.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PortsRecord {
    pub netns: String,
    pub mode: String,
}

impl RevertRecord for PortsRecord {
    const KIND: &'static str = KIND;
}

/// Nothing to do from another process: the sockets closed with the harness that held them.
pub fn revert_record(record: &PortsRecord) -> Result<String, RevertError> {
    Ok(format!(
        "the {} sockets in {} closed with the relapse that held them",
        record.mode, record.netns
    ))
}

/// How to start a port-holder process: `program args… NETNS FROM TO COUNT` must run
/// [`holder_main`] (the `relapse` binary's hidden `__helper port_exhaustion` subcommand).
#[derive(Debug, Clone)]
pub struct HolderLauncher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// A process holding reserved ports; its sockets close when it exits, which it does when its
/// stdin closes: we drop our end, or relapse dies and the kernel closes it.
struct Holder {
    child: std::process::Child,
    held: usize,
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Entry point of a port-holder process: `NETNS FROM TO COUNT`. Enters the namespace, binds up
/// to COUNT ports of FROM..=TO, prints `held N`, and holds them until stdin closes.
///
/// Reserving a whole range takes more descriptors than one process may hold when RLIMIT_NOFILE
/// cannot be raised (no CAP_SYS_RESOURCE), so the range is split across such processes.
pub fn holder_main(args: &[String]) -> Result<(), String> {
    use std::io::{Read, Write};
    let [path, from, to, count] = args else {
        return Err("usage: NETNS FROM TO COUNT".into());
    };
    // No parent-death signal: Linux sends it when the *thread* that forked this process exits,
    // and relapse starts holders from tokio's blocking pool, whose idle threads exit after 10 s
    // — which killed every holder 10 s into a longer fault. The end of stdin (below) is the
    // signal instead: the kernel closes relapse's end of the pipe however relapse dies.
    if nix::unistd::getppid().as_raw() == 1 {
        return Err("relapse exited before the port holder started".into());
    }
    let parse = |v: &String| {
        v.parse::<u32>()
            .map_err(|_| format!("expected a number, found {v:?}"))
    };
    let (from, to, count) = (
        parse(from)? as u16,
        parse(to)? as u16,
        parse(count)? as usize,
    );
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // This process is still single-threaded here, so the whole process enters the namespace.
    nix::sched::setns(
        std::os::fd::AsFd::as_fd(&file),
        nix::sched::CloneFlags::CLONE_NEWNET,
    )
    .map_err(|e| format!("cannot enter {path}: {e}"))?;
    let mut sockets = bind_ports((from, to), count);
    // Stdout is the protocol with relapse (it waits for this line), not output for a person:
    // that is why a library writes to it.
    let mut out = std::io::stdout();
    writeln!(out, "held {}", sockets.len())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    // Ports in use a moment ago (a connection closing) come free: take them as they do, until
    // the quota is held, for as long as relapse keeps the pipe open.
    let closed = Arc::new(AtomicBool::new(false));
    let watcher = closed.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        watcher.store(true, Ordering::SeqCst);
    });
    // The ports of the chunk not yet held, worked down as they come free; one pass of
    // getsockname, not one per round, so a freed port is taken within a few milliseconds.
    let held: std::collections::HashSet<u16> = sockets
        .iter()
        .filter_map(|s| s.local_addr().ok()?.as_socket().map(|a| a.port()))
        .collect();
    let mut missing: Vec<u16> = (from..=to).filter(|p| !held.contains(p)).collect();
    while !closed.load(Ordering::SeqCst) {
        if sockets.len() < count {
            missing.retain(|&port| {
                if sockets.len() >= count {
                    return true;
                }
                match bind_one(port) {
                    Some(socket) => {
                        sockets.push(socket);
                        false
                    }
                    None => true,
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(sockets);
    Ok(())
}

/// Starts holders over `range` until `count` ports are held (or the range is spent).
fn start_holders(
    launcher: &HolderLauncher,
    path: &Path,
    range: (u16, u16),
    count: usize,
) -> Result<Vec<Holder>, String> {
    use std::io::BufRead;
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    // Each holder inherits our limit; keep room for its own few descriptors.
    let per_holder = (soft.saturating_sub(64) as usize).max(1);
    let size = usize::from(range.1 - range.0) + 1;
    let holders_needed = count.div_ceil(per_holder).max(1);
    let chunk = size.div_ceil(holders_needed);
    let mut holders = Vec::new();
    let mut spawned = Vec::new();
    let mut remaining = count;
    for i in 0..holders_needed {
        let from = usize::from(range.0) + i * chunk;
        let to = (from + chunk - 1).min(usize::from(range.1));
        let want = remaining.min(per_holder).min(to + 1 - from);
        remaining -= want;
        let child = std::process::Command::new(&launcher.program)
            .args(&launcher.args)
            .arg(path)
            .args([from.to_string(), to.to_string(), want.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start a port holder ({}): {e}",
                    launcher.program.display()
                )
            })?;
        spawned.push(Holder { child, held: 0 });
    }
    // The holders bind in parallel; collect their counts.
    for mut holder in spawned {
        let stdout = holder.child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        holder.held = line
            .trim()
            .strip_prefix("held ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("a port holder failed to start (said {:?})", line.trim()))?;
        holders.push(holder);
    }
    Ok(holders)
}

pub struct PortExhaustion {
    netns: PathBuf,
    mode: Mode,
    launcher: HolderLauncher,
    holders: Vec<Holder>,
    held: Arc<Mutex<Vec<Socket>>>,
    /// Stops a leak or churn thread.
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Reaps released holders while the kernel closes their sockets.
    closing: Option<std::thread::JoinHandle<()>>,
}

impl PortExhaustion {
    /// Checks the target now: the namespace exists and is not relapse's own unless allowed.
    pub fn new(
        netns_path: PathBuf,
        mode: Mode,
        allow_own_namespace: bool,
        launcher: HolderLauncher,
    ) -> Result<PortExhaustion, PortsError> {
        let own = netns::is_own(&netns_path).map_err(|source| netns::NetnsError::Open {
            path: netns_path.clone(),
            source,
        })?;
        if own && !allow_own_namespace {
            return Err(PortsError::OwnNamespace);
        }
        Ok(PortExhaustion {
            netns: netns_path,
            mode,
            launcher,
            holders: Vec::new(),
            held: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            worker: None,
            closing: None,
        })
    }

    /// How many sockets the fault holds now.
    pub fn held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len()) + self.holders.iter().map(|h| h.held).sum::<usize>()
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Reserve(_) => "reserve",
            Mode::Leak { .. } => "leak",
            Mode::TimeWait { .. } => "time_wait",
        }
    }

    fn release(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
        // Closing each holder's stdin ends it. The kernel takes about 10 µs a socket to close
        // them (a whole range is a few hundred ms of CPU), so the holders are reaped on a thread
        // of their own; `revert` confirms the release by connect() working again.
        for holder in &mut self.holders {
            drop(holder.child.stdin.take());
        }
        let holders = std::mem::take(&mut self.holders);
        if !holders.is_empty() {
            self.closing = Some(std::thread::spawn(move || drop(holders)));
        }
    }

    /// Waits until every released socket is closed (the holders have exited), beyond the
    /// instant `revert` confirmed connect() works again.
    pub fn wait_until_closed(&mut self) {
        if let Some(closing) = self.closing.take() {
            let _ = closing.join();
        }
    }

    async fn inject_now(&mut self) -> Result<Effective, FaultError> {
        let injector = |e: PortsError| FaultError::Injector(e.to_string());
        let range = ephemeral_range(&self.netns).map_err(injector)?;
        let size = usize::from(range.1 - range.0) + 1;
        let where_ = self.netns.display().to_string();
        match self.mode.clone() {
            Mode::Reserve(amount) => {
                let count = match amount {
                    Amount::All => size,
                    Amount::Fraction(f) => ((size as f64) * f).ceil() as usize,
                    Amount::LeaveFree(n) => size.saturating_sub(n as usize),
                };
                let launcher = self.launcher.clone();
                let path = self.netns.clone();
                let holders = tokio::task::spawn_blocking(move || {
                    start_holders(&launcher, &path, range, count)
                })
                .await
                .map_err(|e| FaultError::Injector(e.to_string()))?
                .map_err(FaultError::Injector)?;
                self.holders = holders;
                let bound = self.held();
                if amount == Amount::All {
                    // Ports in use a moment ago (a connection closing) are taken by the holders
                    // as they come free; confirm that connect() finds none left.
                    let deadline = Instant::now() + Duration::from_secs(3);
                    loop {
                        let starved = netns::within(&self.netns, move || connect_starved(range))
                            .map_err(|e| injector(e.into()))?
                            .map_err(FaultError::Injector)?;
                        if starved {
                            break;
                        }
                        if Instant::now() >= deadline {
                            return Err(FaultError::NotConfirmed(format!(
                                "{bound} ports bound in {where_}, yet connect() still finds a free one (ports in TIME_WAIT stay usable to connect())"
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok(Effective {
                    at: Instant::now(),
                    detail: format!(
                        "bound {bound} of {size} ephemeral ports ({}–{}) in {where_}{}",
                        range.0,
                        range.1,
                        match amount {
                            Amount::All => "; connect() fails with EADDRNOTAVAIL".to_string(),
                            Amount::LeaveFree(n) => format!("; {n} left free"),
                            Amount::Fraction(_) => String::new(),
                        }
                    ),
                })
            }
            Mode::Leak {
                destination,
                rate,
                count,
            }
            | Mode::TimeWait {
                destination,
                rate,
                count,
            } => {
                let hold = matches!(self.mode, Mode::Leak { .. });
                ensure_descriptors(if hold { u64::from(count) } else { 64 }).map_err(injector)?;
                let (first_tx, first_rx) = tokio::sync::oneshot::channel();
                let held = self.held.clone();
                let stop = self.stop.clone();
                let path = self.netns.clone();
                let worker = std::thread::spawn(move || {
                    let _ = netns::within(&path, move || {
                        churn(destination, rate, count, hold, held, stop, first_tx)
                    });
                });
                self.worker = Some(worker);
                let first = first_rx
                    .await
                    .map_err(|_| {
                        FaultError::Injector(format!(
                            "the {} thread stopped before its first connection",
                            self.mode_name()
                        ))
                    })?
                    .map_err(|e| {
                        FaultError::NotConfirmed(format!(
                            "first connection to {destination} from {where_}: {e}"
                        ))
                    })?;
                Ok(Effective {
                    at: first,
                    detail: format!(
                        "{} connections to {destination} from {where_}, {rate}/s up to {count}",
                        if hold { "leaking" } else { "churning" }
                    ),
                })
            }
        }
    }
}

/// Opens connections at `rate` per second up to `count` (holding them when `hold`, closing them
/// at once otherwise, which leaves each port in TIME_WAIT), until `stop`. Reports the first
/// connection's outcome through `first`.
fn churn(
    destination: SocketAddr,
    rate: u32,
    count: u32,
    hold: bool,
    held: Arc<Mutex<Vec<Socket>>>,
    stop: Arc<AtomicBool>,
    first: tokio::sync::oneshot::Sender<io::Result<Instant>>,
) {
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = std::time::Instant::now();
    let mut first = Some(first);
    for n in 0..count {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let result = Socket::new(
            Domain::for_address(destination),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .and_then(|s| {
            s.connect_timeout(&destination.into(), Duration::from_secs(1))
                .map(|()| s)
        });
        match (result, first.take()) {
            (Ok(socket), report) => {
                if let Some(report) = report {
                    let _ = report.send(Ok(Instant::now()));
                }
                if hold {
                    if let Ok(mut sockets) = held.lock() {
                        sockets.push(socket);
                    }
                }
            }
            (Err(e), Some(report)) => {
                let _ = report.send(Err(e));
                return;
            }
            // Later failures are what the fault is for: the ports ran out.
            (Err(_), None) => {}
        }
        // Pace by the schedule, not by the previous connect, so the rate holds.
        let due = start + gap * (n + 1);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

impl Fault for PortExhaustion {
    fn describe(&self) -> String {
        format!(
            "port_exhaustion ({}) in {}",
            self.mode_name(),
            self.netns.display()
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        let record = PortsRecord {
            netns: self.netns.display().to_string(),
            mode: self.mode_name().to_string(),
        };
        RevertInstructions::new(&record)
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(self.inject_now())
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            let held = self.held();
            let starving = matches!(self.mode, Mode::Reserve(Amount::All));
            self.release();
            if starving {
                // Removed means: a connect() in the namespace gets a port again.
                let range = ephemeral_range(&self.netns)
                    .map_err(|e| FaultError::Injector(e.to_string()))?;
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let starved = netns::within(&self.netns, move || connect_starved(range))
                        .map_err(|e| FaultError::Injector(e.to_string()))?
                        .map_err(FaultError::Injector)?;
                    if !starved {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(FaultError::NotConfirmed(
                            "connect() still finds no free port 5 s after the release".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(Reverted {
                at: Instant::now(),
                detail: format!(
                    "released {held} sockets in {}{}",
                    self.netns.display(),
                    if starving {
                        "; connect() gets a port again"
                    } else {
                        ""
                    }
                ),
            })
        })
    }

    fn revert_now(&mut self) {
        self.release();
    }
}
