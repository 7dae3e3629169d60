//! What the tests share: a scratch ext4 file system under a tempdir, with a guard that thaws,
//! ends the test's children and removes everything even when the test fails, and the check that
//! nothing is left.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use relapse_fs::{FreezeRecord, HolderLauncher, ScratchFs, ScratchFsRecord};

pub const MIB: u64 = 1024 * 1024;

pub fn holder() -> HolderLauncher {
    HolderLauncher {
        program: env!("CARGO_BIN_EXE_relapse-fs-holder").into(),
        args: Vec::new(),
    }
}

/// A tempdir with one scratch file system in it, removed on drop whatever happened.
pub struct TestFs {
    pub fs: Option<ScratchFs>,
    pub record: ScratchFsRecord,
    /// Writers the test started: killed after the thaw (a process in state D cannot die).
    pub children: Vec<tokio::process::Child>,
    pub dir: tempfile::TempDir,
}

impl TestFs {
    pub fn new() -> TestFs {
        let dir = tempfile::tempdir().expect("a tempdir");
        let fs = ScratchFs::create(dir.path(), "fs", 64 * MIB, &mut |_, _| Ok(()))
            .expect("a scratch file system");
        TestFs {
            record: fs.record().clone(),
            fs: Some(fs),
            children: Vec::new(),
            dir,
        }
    }

    pub fn mountpoint(&self) -> PathBuf {
        self.record.mountpoint.clone()
    }

    pub fn st_dev(&self) -> u64 {
        self.record.st_dev.expect("mounted")
    }

    /// Removes the file system and checks nothing of it is left.
    pub fn finish(mut self) {
        let said = self
            .fs
            .take()
            .expect("not removed yet")
            .remove()
            .expect("removed");
        assert!(said.contains("unmounted"), "{said}");
        assert_nothing_left(self.dir.path(), std::slice::from_ref(&self.record.image));
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        // Thaw first: the children may be blocked on the freeze, and so may an unmount.
        let _ = relapse_fs::revert_record(&FreezeRecord {
            mountpoint: self.record.mountpoint.clone(),
            st_dev: self.st_dev(),
        });
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        if let Some(fs) = self.fs.take() {
            let _ = fs.remove();
        }
        let _ = relapse_fs::remove_record(&self.record);
    }
}

/// No mount under `dir` in /proc/mounts, and no loop device attached to any of `images`
/// (`losetup -j`), nor the images themselves.
pub fn assert_nothing_left(dir: &Path, images: &[PathBuf]) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let under: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .collect();
    assert!(under.is_empty(), "mounts left: {under:?}");
    for image in images {
        let out = std::process::Command::new("losetup")
            .arg("-j")
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "loop devices left on {}",
            image.display()
        );
        assert!(!image.exists(), "{} left", image.display());
    }
}

pub fn in_proc_mounts(mountpoint: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(mountpoint.to_str().unwrap()))
}

/// A writer that does what a service does on its volume: write a file and fsync it.
pub fn start_writer(file: &Path) -> tokio::process::Child {
    tokio::process::Command::new("sh")
        .args(["-c", "echo written > \"$1\" && sync \"$1\"", "sh"])
        .arg(file)
        .kill_on_drop(true)
        .spawn()
        .expect("sh")
}

pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Polls /proc (there is no event for another process's state) until `pid` is in state D.
pub async fn blocked_within(pid: u32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if state(pid) == Some('D') {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Polls /proc until `pid` is gone or a zombie (a process that is not our child: no event).
pub async fn gone_within(pid: u32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if matches!(state(pid), None | Some('Z')) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Waits for a child's exit, at most `within`.
pub async fn exits_within(
    child: &mut tokio::process::Child,
    within: Duration,
) -> Option<ExitStatus> {
    tokio::time::timeout(within, child.wait()).await.ok()?.ok()
}
