//! Network namespaces: the "hosts" relapse creates for faults that act on a whole network stack
//! (ports, file descriptors of a host), so that the machine's own namespace is never exhausted.
//!
//! A namespace is created with iproute2 (`ip netns add`, a veth pair, addresses from
//! 198.18.0.0/15, the range reserved for benchmarking) rather than through a netlink crate: the
//! commands are what an operator would type to inspect or remove it by hand, and the namespace
//! outlives a crashed harness only as a name `ip netns del` removes.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::{setns, CloneFlags};

/// Why a namespace could not be made, entered or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {}: {source} (entering a namespace needs CAP_SYS_ADMIN)", path.display())]
    Enter { path: PathBuf, source: nix::Error },
    #[error("no free address block in 198.18.0.0/15 after {0} tries")]
    NoAddress(u32),
}

/// Runs `ip ARGS…`, turning a failure into a message that quotes the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Command {
            command: command.clone(),
            reason: format!("{e} (iproute2's `ip` is needed: apt-get install iproute2)"),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            command,
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The path of a named namespace, as `ip netns` keeps it.
pub fn named_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The inode that identifies a network namespace (the same file, the same namespace).
pub fn inode(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino())
}

/// Whether `path` is the namespace this process runs in.
pub fn is_own(path: &Path) -> std::io::Result<bool> {
    Ok(inode(path)? == inode(Path::new("/proc/self/ns/net"))?)
}

/// Runs `work` on a thread that has entered the namespace at `path`. Sockets made there stay in
/// that namespace for their whole life, whichever thread uses them later; the calling thread and
/// the rest of the process stay where they are.
pub fn within<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let file = std::fs::File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { path, source })?;
        Ok(work())
    })
    .join()
    .expect("work inside a namespace does not panic")
}

/// A namespace relapse made: a "host" joined to this namespace by a veth pair. Dropping it
/// removes it (and with it the veth pair).
#[derive(Debug)]
pub struct Host {
    name: String,
    /// This namespace's end of the veth pair.
    pub outside: Ipv4Addr,
    /// The host's own address, inside the namespace.
    pub inside: Ipv4Addr,
    /// The name of the veth pair's end in this namespace: setting it down cuts the host off.
    outside_link: String,
    removed: bool,
}

impl Host {
    /// Creates namespace `name` with a veth pair whose /30 block is picked from 198.18.0.0/15 by
    /// `seed` (tried again further on if taken), and loopback up.
    pub fn create(name: &str, seed: u32) -> Result<Host, NetnsError> {
        ip(&["netns", "add", name]).map_err(|e| match e {
            NetnsError::Command { command, reason } => NetnsError::Command {
                command,
                reason: format!("{reason} (creating a network namespace needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN)"),
            },
            other => other,
        })?;
        let mut host = Host {
            name: name.to_string(),
            outside: Ipv4Addr::UNSPECIFIED,
            inside: Ipv4Addr::UNSPECIFIED,
            outside_link: String::new(),
            removed: false,
        };
        // 2^15 blocks of 4 addresses in 198.18.0.0/15.
        const TRIES: u32 = 8;
        for attempt in 0..TRIES {
            let block = (seed.wrapping_add(attempt.wrapping_mul(7919))) % (1 << 15);
            let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
            let (outside, inside) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
            let veth_out = format!("rlo{block:x}");
            let veth_in = format!("rli{block:x}");
            if ip(&[
                "link", "add", &veth_out, "type", "veth", "peer", "name", &veth_in, "netns", name,
            ])
            .is_err()
            {
                continue; // The names (so the block) are in use by another run.
            }
            let setup = || -> Result<(), NetnsError> {
                ip(&["addr", "add", &format!("{outside}/30"), "dev", &veth_out])?;
                ip(&["link", "set", &veth_out, "up"])?;
                ip(&[
                    "-n",
                    name,
                    "addr",
                    "add",
                    &format!("{inside}/30"),
                    "dev",
                    &veth_in,
                ])?;
                ip(&["-n", name, "link", "set", &veth_in, "up"])?;
                ip(&["-n", name, "link", "set", "lo", "up"])?;
                Ok(())
            };
            match setup() {
                Ok(()) => {
                    host.outside = outside;
                    host.inside = inside;
                    host.outside_link = veth_out;
                    return Ok(host);
                }
                Err(e) => {
                    let _ = ip(&["link", "del", &veth_out]);
                    return Err(e); // `host` drops and removes the namespace.
                }
            }
        }
        Err(NetnsError::NoAddress(TRIES))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        named_path(&self.name)
    }

    /// The veth end in this (the creating) namespace.
    pub fn outside_link(&self) -> &str {
        &self.outside_link
    }

    /// Removes the namespace; idempotent.
    pub fn remove(&mut self) -> Result<(), NetnsError> {
        if self.removed {
            return Ok(());
        }
        remove(&self.name)?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::error!(namespace = %self.name, error = %e, "could not remove a network namespace");
        }
    }
}

/// Removes a named namespace; a namespace that is already gone is not an error. Processes still
/// inside keep it alive until they exit, but its name is gone.
pub fn remove(name: &str) -> Result<(), NetnsError> {
    if !named_path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name])
}

/// The journal kind of a namespace relapse made for a run (the demo's host).
pub const KIND: &str = "netns";

/// The journal's record of a namespace relapse made: written before the namespace exists, so a
/// crash in between leaves nothing `cleanup` would not find.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetnsRecord {
    pub name: String,
}

impl relapse_core::fault::RevertRecord for NetnsRecord {
    const KIND: &'static str = KIND;
}

/// Removes a journaled namespace; idempotent (see [`remove`]).
pub fn revert_record(record: &NetnsRecord) -> Result<String, relapse_core::fault::RevertError> {
    remove(&record.name)
        .map(|()| format!("network namespace {} removed", record.name))
        .map_err(|e| relapse_core::fault::RevertError::failed("ip netns del", e))
}
