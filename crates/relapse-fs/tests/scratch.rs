//! ScratchFs against real loop-mounted ext4 images under a tempdir; each test checks that no
//! mount, loop device or image is left.

mod common;

use std::path::PathBuf;

use common::{assert_nothing_left, in_proc_mounts, MIB};
use relapse_core::fault::{decode_record, RevertInstructions};
use relapse_fs::{remove_record, ScratchFs, ScratchFsRecord, ScratchStep};

fn create(dir: &std::path::Path, name: &str) -> ScratchFs {
    ScratchFs::create(dir, name, 32 * MIB, &mut |_, _| Ok(())).expect("a scratch file system")
}

#[test]
fn a_scratch_fs_is_journaled_before_each_step_mounted_and_removed_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut steps: Vec<(ScratchStep, ScratchFsRecord)> = Vec::new();
    let fs = ScratchFs::create(dir.path(), "one", 64 * MIB, &mut |step, record| {
        // Before each step, nothing of it exists yet.
        match step {
            ScratchStep::Image => assert!(!record.image.exists()),
            ScratchStep::Attach => assert!(relapse_loops(&record.image).is_empty()),
            ScratchStep::Mount => assert!(!in_proc_mounts(&record.mountpoint)),
        }
        steps.push((step, record.clone()));
        Ok(())
    })
    .unwrap();
    let names: Vec<ScratchStep> = steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        names,
        [ScratchStep::Image, ScratchStep::Attach, ScratchStep::Mount]
    );
    assert_eq!(steps[0].1.loop_device, None);
    assert_eq!(steps[1].1.loop_device, None);
    assert_eq!(&steps[2].1, fs.record());
    assert!(fs.loop_device().to_str().unwrap().starts_with("/dev/loop"));
    assert!(in_proc_mounts(fs.mountpoint()));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == fs.mountpoint().to_str())
        .unwrap();
    assert!(
        line.starts_with(&format!("{} ", fs.loop_device().display())),
        "{line}"
    );
    assert!(
        line.contains(" ext4 ") && line.contains("nosuid") && line.contains("nodev"),
        "{line}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(fs.mountpoint()).unwrap().dev(),
        fs.st_dev()
    );
    // Sparse: the image takes far less room than its size.
    let image = std::fs::metadata(fs.image()).unwrap();
    assert_eq!(image.len(), 64 * MIB);
    assert!(image.blocks() * 512 < 32 * MIB, "{} blocks", image.blocks());
    std::fs::write(fs.mountpoint().join("data"), "x").unwrap();
    // The record survives the journal's round trip.
    let back: ScratchFsRecord = RevertInstructions::new(fs.record()).decode().unwrap();
    assert_eq!(&back, fs.record());

    let record = fs.record().clone();
    let said = fs.remove().unwrap();
    for step in ["unmounted", "detached", "deleted", "removed"] {
        assert!(said.contains(step), "{said}");
    }
    assert!(!record.mountpoint.exists());
    assert_nothing_left(dir.path(), &[record.image]);
}

/// The loop devices attached to `image`, as losetup sees them.
fn relapse_loops(image: &std::path::Path) -> String {
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn remove_record_cleans_up_after_a_crash_and_again_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = create(dir.path(), "crashed");
    let record = fs.record().clone();
    std::fs::write(fs.mountpoint().join("data"), "x").unwrap();
    // The crash: nothing of the ScratchFs runs any more.
    std::mem::forget(fs);
    let journaled = serde_json::to_value(&record).unwrap();
    let said = remove_record(&decode_record(journaled).unwrap()).unwrap();
    assert!(
        said.contains("unmounted") && said.contains("detached"),
        "{said}"
    );
    assert_nothing_left(dir.path(), std::slice::from_ref(&record.image));
    assert!(!record.mountpoint.exists());
    // Idempotent.
    let again = remove_record(&record).unwrap();
    assert!(again.starts_with("nothing was left"), "{again}");
}

#[test]
fn a_record_journaled_before_the_attach_still_finds_its_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut before_attach = None;
    let fs = ScratchFs::create(dir.path(), "early", 32 * MIB, &mut |step, record| {
        if step == ScratchStep::Attach {
            before_attach = Some(record.clone());
        }
        Ok(())
    })
    .unwrap();
    let image = fs.image().to_path_buf();
    // The crash came right after losetup: the journal knows no loop device and no st_dev.
    std::mem::forget(fs);
    let record = before_attach.unwrap();
    assert_eq!((&record.loop_device, record.st_dev), (&None, None));
    let said = remove_record(&record).unwrap();
    assert!(said.contains("detached /dev/loop"), "{said}");
    assert_nothing_left(dir.path(), &[image]);
}

#[test]
fn a_busy_scratch_fs_is_unmounted_lazily_and_its_loop_device_goes_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let fs = create(dir.path(), "busy");
    let record = fs.record().clone();
    let device = fs.loop_device().to_path_buf();
    let open = std::fs::File::create(fs.mountpoint().join("held")).unwrap();
    std::mem::forget(fs);
    let said = remove_record(&record).unwrap();
    assert!(said.contains("lazily"), "{said}");
    assert!(said.contains("detaches when"), "{said}");
    assert!(!in_proc_mounts(&record.mountpoint));
    drop(open);
    // The kernel detaches it (autoclear) once the file system's last user is gone; no event.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !relapse_loops(&record.image).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_nothing_left(dir.path(), std::slice::from_ref(&record.image));
    let name = device.file_name().unwrap().to_str().unwrap().to_string();
    let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"));
    assert!(
        backing.map_or(true, |b| !b.contains(record.image.to_str().unwrap())),
        "{} still attached",
        device.display()
    );
}

#[test]
fn remove_record_skips_a_loop_device_that_now_backs_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = create(dir.path(), "first");
    let stale = first.record().clone();
    first.remove().unwrap();
    let second = create(dir.path(), "second");
    // The stale record now names the second's loop device, device number and mountpoint: the
    // worst a reused loop device could do.
    let forged = ScratchFsRecord {
        image: stale.image.clone(),
        loop_device: Some(second.loop_device().to_path_buf()),
        mountpoint: second.mountpoint().to_path_buf(),
        st_dev: Some(second.st_dev()),
    };
    let said = remove_record(&forged).unwrap();
    assert!(
        said.contains(&format!(
            "skipped {}: it is now attached to {}",
            second.loop_device().display(),
            second.image().display()
        )),
        "{said}"
    );
    assert!(said.contains("left the mount"), "{said}");
    assert!(in_proc_mounts(second.mountpoint()));
    assert!(!relapse_loops(second.image()).is_empty());
    assert!(second.mountpoint().exists());
    let second_image = second.image().to_path_buf();
    second.remove().unwrap();
    assert_nothing_left(dir.path(), &[stale.image, second_image]);
}

#[test]
fn create_refuses_an_existing_image_and_a_failed_journal_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let existing: PathBuf = dir.path().join("taken.img");
    std::fs::write(&existing, "someone's").unwrap();
    let err = ScratchFs::create(dir.path(), "taken", 32 * MIB, &mut |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().starts_with("creating "), "{err}");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "someone's");
    assert!(!dir.path().join("taken.mnt").exists());

    let err = ScratchFs::create(dir.path(), "refused", 32 * MIB, &mut |step, _| {
        if step == ScratchStep::Mount {
            return Err("the journal is full".into());
        }
        Ok(())
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "journaling the mount step: the journal is full"
    );
    let image = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("refused.img");
    assert_nothing_left(dir.path(), &[image]);
    assert!(!dir.path().join("refused.mnt").exists());
    assert!(ScratchFs::create(dir.path(), "../x", MIB, &mut |_, _| Ok(())).is_err());
}
