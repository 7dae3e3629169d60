//! The file systems a run makes for itself: scratch ext4 images on loop devices, and FUSE gates
//! over a source directory. Each is journaled before it is made, so that a crash at any step
//! leaves nothing `relapse cleanup` cannot undo.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use relapse_core::fault::{RevertInstructions, RevertLog};

use super::{Harness, StartFailure};
use crate::reach::render;

/// Where scratch file systems keep their images: in memory (a tmpfs), when the machine has it.
const IMAGES_IN_MEMORY: &str = "/dev/shm";

/// A number for each scratch image this process makes, for unique names in a shared directory.
fn images() -> u32 {
    static IMAGES: AtomicU32 = AtomicU32::new(0);
    IMAGES.fetch_add(1, Ordering::SeqCst)
}

impl Harness {
    /// A file system for the run: an ext4 image on a loop device, mounted under the run's
    /// directory, journaled before its first step so a crash at any step leaves nothing.
    pub(super) async fn start_scratch(
        &mut self,
        spec: &relapse_core::scenario::ScratchFsSpec,
    ) -> Result<(), StartFailure> {
        let dir = self.run_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            StartFailure::Harness(format!(
                "scratch_fs \"{}\": {}: {e}",
                spec.name,
                dir.display()
            ))
        })?;
        let journal = self.journal.clone();
        let (name, size) = (spec.name.clone(), spec.size);
        // Making a file system blocks (mkfs, losetup, mount): off the runtime's threads.
        let made = tokio::task::spawn_blocking(move || {
            let mut entry = None;
            let mut on_step = |step: relapse_fs::ScratchStep,
                               record: &relapse_fs::ScratchFsRecord|
             -> Result<(), relapse_core::fault::BoxError> {
                if let (Some(journal), None) = (&journal, entry) {
                    let description = format!(
                        "scratch file system {} on {}",
                        record.mountpoint.display(),
                        record.image.display()
                    );
                    let id = journal.clone().record(
                        "scratch_fs",
                        &description,
                        &RevertInstructions::new(record),
                    )?;
                    entry = Some(id);
                }
                tracing::debug!(step = step.name(), "scratch_fs");
                Ok(())
            };
            // The image in memory where the machine has a tmpfs for it: a write on the scratch
            // file system then waits for a freeze, never for the host disk's fsync (hundreds of
            // milliseconds on a busy CI machine, which a deep health check would take for a
            // lockup).
            let prefix = format!("relapse-{}-{}", std::process::id(), images());
            let memory = Path::new(IMAGES_IN_MEMORY);
            let image_dir = memory.is_dir().then_some((memory, prefix.as_str()));
            let made = relapse_fs::ScratchFs::create_with_image(
                &dir,
                image_dir,
                &name,
                size,
                &mut on_step,
            );
            (made, entry)
        })
        .await
        .map_err(|e| StartFailure::Harness(format!("scratch_fs \"{}\": {e}", spec.name)))?;
        match made {
            (Ok(fs), entry) => {
                self.vars.set(
                    &format!("scratch_fs.{}.path", spec.name),
                    fs.mountpoint().display().to_string(),
                );
                self.scratch.push((fs, entry));
                Ok(())
            }
            (Err(e), entry) => {
                // `create` removes what it made before it returns an error.
                self.forget(entry);
                Err(StartFailure::Harness(format!(
                    "scratch_fs \"{}\": {e}",
                    spec.name
                )))
            }
        }
    }

    /// A FUSE passthrough of the spec's source, mounted under the run's directory; journaled
    /// once its daemon exists and before it mounts.
    pub(super) async fn start_gate(
        &mut self,
        spec: &relapse_core::scenario::FsGateSpec,
    ) -> Result<(), StartFailure> {
        let failed = |e: String| StartFailure::Harness(format!("fs_gate \"{}\": {e}", spec.name));
        let source = PathBuf::from(render(&spec.source, &self.vars).map_err(&failed)?);
        let mountpoint = self.run_dir().join(format!("{}.gate", spec.name));
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| failed(format!("{}: {e}", mountpoint.display())))?;
        let launcher = relapse_fs::HolderLauncher {
            program: self.program.clone(),
            args: vec![
                crate::kinds::HELPER_COMMAND.to_string(),
                relapse_fs::GATE_KIND.to_string(),
            ],
        };
        let journal = self.journal.clone();
        let mut entry = None;
        let mut on_record =
            |record: &relapse_fs::GateRecord| -> Result<(), relapse_core::fault::BoxError> {
                if let Some(journal) = &journal {
                    let description = format!(
                        "fs_gate {} over {}",
                        record.mountpoint.display(),
                        record.source.display()
                    );
                    entry = Some(journal.clone().record(
                        "fs_gate",
                        &description,
                        &RevertInstructions::new(record),
                    )?);
                }
                Ok(())
            };
        let started = relapse_fs::Gate::start(&source, &mountpoint, launcher, &mut on_record).await;
        match started {
            Ok(gate) => {
                self.vars.set(
                    &format!("fs_gate.{}.path", spec.name),
                    gate.mountpoint().display().to_string(),
                );
                self.gates.push((gate, entry));
                Ok(())
            }
            Err(e) => {
                // `start` unmounts and ends its daemon before it returns an error.
                self.forget(entry);
                let _ = std::fs::remove_dir(&mountpoint);
                Err(failed(e.to_string()))
            }
        }
    }
}
