//! A file system relapse makes for itself: a sparse image file, `mkfs.ext4` on it, a loop device
//! (`losetup`), a mount (mount(2)). Each step is announced to the caller before it happens, with
//! the record that undoes everything up to and including it, so a journal can follow; the
//! teardown — thaw, unmount, detach, delete — runs from that record alone, in this process or
//! another, and touches only a loop device attached to the record's image and a mount of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use relapse_core::fault::{BoxError, RevertError, RevertRecord};
use serde::{Deserialize, Serialize};

use crate::mounts::{dev_of, loop_backing, loops_backing, mount_at, rdev_of};
use crate::FsError;

/// The journal's name for a scratch file system's record (a harness record, not a fault kind).
pub const SCRATCH_KIND: &str = "scratch_fs";

/// How long an unmount may stay busy (a process leaving the file system) before it is done
/// lazily.
const UNMOUNT_BUSY_FOR: Duration = Duration::from_secs(1);
/// How long a detached loop device may stay attached: the kernel detaches it when its last
/// opener (udev probing it, often) closes it.
const DETACH_WITHIN: Duration = Duration::from_secs(3);
/// How often to look again while waiting for either: the kernel sends no event for them.
const POLL: Duration = Duration::from_millis(10);

/// Everything needed to remove a scratch file system from another process. The fields fill in
/// as creation goes on; a record given before a step undoes that step too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScratchFsRecord {
    /// The image file (absolute, canonical directory).
    pub image: PathBuf,
    /// The loop device the image is attached to, once known. Before that, a removal looks for
    /// any loop device attached to `image`.
    pub loop_device: Option<PathBuf>,
    /// The directory the file system is mounted at.
    pub mountpoint: PathBuf,
    /// The mounted file system's device number (the loop device's `st_rdev`), once known.
    pub st_dev: Option<u64>,
}

impl RevertRecord for ScratchFsRecord {
    const KIND: &'static str = SCRATCH_KIND;
}

/// The step about to happen when the caller is given a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchStep {
    /// Create the image file and the mountpoint directory, run `mkfs.ext4`.
    Image,
    /// Attach the image to a free loop device (which one is known only after).
    Attach,
    /// Mount the loop device: the record now names it and its device number.
    Mount,
}

impl ScratchStep {
    pub fn name(self) -> &'static str {
        match self {
            ScratchStep::Image => "image",
            ScratchStep::Attach => "attach",
            ScratchStep::Mount => "mount",
        }
    }
}

/// A mounted scratch ext4 file system; removed by [`ScratchFs::remove`], or on drop.
#[derive(Debug)]
pub struct ScratchFs {
    record: ScratchFsRecord,
    removed: bool,
}

impl ScratchFs {
    /// Makes `DIR/NAME.img` (a sparse file of `size` bytes) with an ext4 file system, attaches it
    /// to a loop device and mounts it at `DIR/NAME.mnt` (a new directory). `on_step` is called
    /// before each step with the record to journal; an error from it stops the creation, and
    /// what was made is removed again. Neither path may exist yet: a leftover of an earlier run
    /// is its journal's to remove, not this call's to overwrite.
    ///
    /// Blocking (it runs `mkfs.ext4` and `losetup`, a few hundred ms): from async code, call it
    /// on a blocking thread.
    pub fn create(
        dir: &Path,
        name: &str,
        size: u64,
        on_step: &mut dyn FnMut(ScratchStep, &ScratchFsRecord) -> Result<(), BoxError>,
    ) -> Result<ScratchFs, FsError> {
        ScratchFs::create_with_image(dir, None, name, size, on_step)
    }

    /// [`ScratchFs::create`], with the image in `image_dir` (as `IMAGE_PREFIX-NAME.img`) rather
    /// than beside the mount point: in memory (`/dev/shm`), a freeze's effect is all that a
    /// write on the file system waits for, not also the latency of the disk under the image.
    pub fn create_with_image(
        dir: &Path,
        image_dir: Option<(&Path, &str)>,
        name: &str,
        size: u64,
        on_step: &mut dyn FnMut(ScratchStep, &ScratchFsRecord) -> Result<(), BoxError>,
    ) -> Result<ScratchFs, FsError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(FsError::Name(name.to_string()));
        }
        let dir = std::fs::canonicalize(dir).map_err(FsError::io(dir.display().to_string()))?;
        let image = match image_dir {
            None => dir.join(format!("{name}.img")),
            Some((image_dir, prefix)) => std::fs::canonicalize(image_dir)
                .map_err(FsError::io(image_dir.display().to_string()))?
                .join(format!("{prefix}-{name}.img")),
        };
        let mut record = ScratchFsRecord {
            image,
            loop_device: None,
            mountpoint: dir.join(format!("{name}.mnt")),
            st_dev: None,
        };
        let mut journal = |step: ScratchStep, record: &ScratchFsRecord| {
            on_step(step, record).map_err(|source| FsError::Journal {
                step: step.name(),
                source,
            })
        };
        journal(ScratchStep::Image, &record)?;
        // Made before the guard exists, so that a path that was already there is never removed.
        let image = std::fs::File::create_new(&record.image)
            .map_err(FsError::io(format!("creating {}", record.image.display())))?;
        if let Err(e) = std::fs::create_dir(&record.mountpoint) {
            drop(image);
            let _ = std::fs::remove_file(&record.image);
            return Err(FsError::io(format!(
                "creating {}",
                record.mountpoint.display()
            ))(e));
        }
        let mut fs = ScratchFs {
            record: record.clone(),
            removed: false,
        };
        image
            .set_len(size)
            .map_err(FsError::io(format!("sizing {}", record.image.display())))?;
        drop(image);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&record.image))?;

        journal(ScratchStep::Attach, &record)?;
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&record.image))?;
        let device = PathBuf::from(device.trim());
        if loop_backing(&device).as_deref() != Some(record.image.as_path()) {
            return Err(FsError::NotConfirmed(format!(
                "losetup said {} but that loop device is not attached to {}",
                device.display(),
                record.image.display()
            )));
        }
        record.loop_device = Some(device.clone());
        record.st_dev =
            Some(rdev_of(&device).map_err(FsError::io(format!("stat {}", device.display())))?);
        fs.record = record.clone();

        journal(ScratchStep::Mount, &record)?;
        mount(
            Some(&device),
            &record.mountpoint,
            Some("ext4"),
            // Scratch data for services, never devices or set-uid programs.
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(FsError::sys(format!(
            "mounting {} at {}",
            device.display(),
            record.mountpoint.display()
        )))?;
        let mounted = dev_of(&record.mountpoint).ok();
        if mounted != record.st_dev {
            return Err(FsError::NotConfirmed(format!(
                "{} shows device {mounted:?} after the mount, not {:?}",
                record.mountpoint.display(),
                record.st_dev
            )));
        }
        Ok(fs)
    }

    pub fn record(&self) -> &ScratchFsRecord {
        &self.record
    }

    pub fn mountpoint(&self) -> &Path {
        &self.record.mountpoint
    }

    pub fn image(&self) -> &Path {
        &self.record.image
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn loop_device(&self) -> &Path {
        self.record
            .loop_device
            .as_deref()
            .expect("a created scratch file system has its loop device")
    }

    /// The mounted file system's device number (`st_dev` of every file on it).
    pub fn st_dev(&self) -> u64 {
        self.record
            .st_dev
            .expect("a created scratch file system has its device number")
    }

    /// Thaws (if frozen), unmounts, detaches and deletes; returns what was done, once confirmed.
    /// Blocking: a busy file system is given up to 1 s before it is unmounted lazily, a loop
    /// device up to 3 s to detach.
    pub fn remove(mut self) -> Result<String, FsError> {
        self.removed = true;
        teardown(&self.record)
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = teardown(&self.record) {
                tracing::error!(image = %self.record.image.display(), error = %e, "could not remove a scratch file system");
            }
        }
    }
}

/// Removes what a journaled scratch file system record names, from any process; used by the
/// guardian and `relapse cleanup`. Idempotent: what is already gone is fine. A loop device that
/// is now attached to another file, or a mount at the mountpoint that is not of the record's
/// device, is left alone and the answer says so.
pub fn remove_record(record: &ScratchFsRecord) -> Result<String, RevertError> {
    teardown(record)
        .map_err(|e| RevertError::failed(format!("removing {}", record.image.display()), e))
}

/// Runs a command; its stdout if it exits 0.
fn run(command: &mut Command) -> Result<String, FsError> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(FsError::io(format!("cannot run {shown}")))?;
    if !output.status.success() {
        return Err(FsError::Command {
            command: shown,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Thaw → unmount → detach → delete, each only of what is provably the record's.
fn teardown(record: &ScratchFsRecord) -> Result<String, FsError> {
    let mut said = Vec::new();
    let image = record.image.as_path();
    // Ours: the loop devices attached to our image, whatever the record knew of them.
    let ours = loops_backing(image);
    if let Some(device) = &record.loop_device {
        if !ours.contains(device) {
            if let Some(other) = loop_backing(device) {
                said.push(format!(
                    "skipped {}: it is now attached to {}, not {}",
                    device.display(),
                    other.display(),
                    image.display()
                ));
            }
        }
    }
    let our_devs: Vec<u64> = ours.iter().filter_map(|d| rdev_of(d).ok()).collect();
    let is_ours = |dev: u64| our_devs.contains(&dev) && record.st_dev.is_none_or(|d| d == dev);

    let mut lazy = false;
    let mountpoint = record.mountpoint.as_path();
    // A loop: the same device may have been mounted there more than once.
    for _ in 0..8 {
        let Some(mounted) = mount_at(mountpoint).map_err(FsError::io("reading mountinfo"))? else {
            break;
        };
        if !is_ours(mounted.dev) || dev_of(mountpoint).ok() != Some(mounted.dev) {
            said.push(format!(
                "left the mount at {} alone: device {}:{} is not this record's",
                mountpoint.display(),
                nix::sys::stat::major(mounted.dev),
                nix::sys::stat::minor(mounted.dev)
            ));
            break;
        }
        // Thaw first: an unmount of a frozen file system would wait for the thaw.
        let root = std::fs::File::open(mountpoint)
            .map_err(FsError::io(format!("opening {}", mountpoint.display())))?;
        match crate::ioctl::thaw(&root) {
            Ok(()) => said.push(format!("thawed {}", mountpoint.display())),
            Err(Errno::EINVAL) => {}
            Err(e) => return Err(FsError::sys(format!("thawing {}", mountpoint.display()))(e)),
        }
        drop(root);
        lazy |= unmount(mountpoint, &mut said)?;
    }

    for device in &ours {
        // Checked again just before: the device might have been detached and reused meanwhile.
        if loop_backing(device).as_deref() != Some(image) {
            continue;
        }
        if let Err(e) = run(Command::new("losetup").arg("-d").arg(device)) {
            if loop_backing(device).as_deref() == Some(image) {
                return Err(e);
            }
        }
        let deadline = Instant::now() + DETACH_WITHIN;
        loop {
            if loop_backing(device).as_deref() != Some(image) {
                said.push(format!("detached {}", device.display()));
                break;
            }
            if lazy {
                said.push(format!(
                    "{} detaches when the lazily unmounted file system is released",
                    device.display()
                ));
                break;
            }
            if Instant::now() >= deadline {
                return Err(FsError::NotConfirmed(format!(
                    "{} is still attached to {} {DETACH_WITHIN:?} after losetup -d",
                    device.display(),
                    image.display()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    match std::fs::remove_file(image) {
        Ok(()) => said.push(format!("deleted {}", image.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::io(format!("deleting {}", image.display()))(e)),
    }
    if mount_at(mountpoint).ok().flatten().is_none() {
        match std::fs::remove_dir(mountpoint) {
            Ok(()) => said.push(format!("removed {}", mountpoint.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::io(format!("removing {}", mountpoint.display()))(e)),
        }
    }
    if said.is_empty() {
        return Ok(format!("nothing was left of {}", image.display()));
    }
    Ok(said.join("; "))
}

/// Unmounts, waiting a bounded time for a busy file system to be left before detaching it
/// lazily. Returns whether it had to be lazy.
fn unmount(mountpoint: &Path, said: &mut Vec<String>) -> Result<bool, FsError> {
    let deadline = Instant::now() + UNMOUNT_BUSY_FOR;
    loop {
        match umount2(mountpoint, MntFlags::empty()) {
            Ok(()) => {
                said.push(format!("unmounted {}", mountpoint.display()));
                return Ok(false);
            }
            // Not mounted (any more): someone else unmounted it meanwhile.
            Err(Errno::EINVAL) => return Ok(false),
            Err(Errno::EBUSY) if Instant::now() < deadline => std::thread::sleep(POLL),
            Err(Errno::EBUSY) => {
                umount2(mountpoint, MntFlags::MNT_DETACH)
                    .map_err(FsError::sys(format!("unmounting {}", mountpoint.display())))?;
                said.push(format!(
                    "unmounted {} lazily (still busy after {UNMOUNT_BUSY_FOR:?})",
                    mountpoint.display()
                ));
                return Ok(true);
            }
            Err(e) => return Err(FsError::sys(format!("unmounting {}", mountpoint.display()))(e)),
        }
    }
}
