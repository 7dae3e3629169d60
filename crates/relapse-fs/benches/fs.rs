//! What the file-system faults cost: a freeze and its thaw (clean, and with dirty data to flush
//! first), and the fs_gate's pass-through against the bare directory under it (the same
//! operations in the same run, so the ratio is what to read). Needs root, e2fsprogs, loop
//! devices and /dev/fuse, like the crate's tests; everything it makes is removed on drop.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use relapse_core::fault::Fault;
use relapse_fs::{FsFreeze, Gate, HolderLauncher, ScratchFs};

const MIB: u64 = 1 << 20;

fn holder() -> HolderLauncher {
    HolderLauncher {
        program: env!("CARGO_BIN_EXE_relapse-fs-holder").into(),
        args: Vec::new(),
    }
}

/// Writes `bytes` to a file on `dir` without syncing: dirty pages the freeze must flush.
fn dirty(dir: &Path, bytes: usize) {
    let mut file = std::fs::File::create(dir.join("dirty")).unwrap();
    file.write_all(&vec![0x5a; bytes]).unwrap();
}

fn freeze_and_thaw(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fs = ScratchFs::create(dir.path(), "bench", 256 * MIB, &mut |_, _| Ok(())).unwrap();
    let mountpoint = fs.mountpoint().to_path_buf();
    let mut group = c.benchmark_group("fs_freeze");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for dirty_mib in [0usize, 32] {
        group.bench_function(format!("inject + revert, {dirty_mib} MiB dirty"), |b| {
            b.iter(|| {
                if dirty_mib > 0 {
                    dirty(&mountpoint, dirty_mib << 20);
                }
                let mut fault = FsFreeze::new(&mountpoint, holder(), &[]).unwrap();
                runtime.block_on(fault.inject()).unwrap();
                runtime.block_on(fault.revert()).unwrap();
                (fault.freeze_took(), fault.thaw_took())
            })
        });
    }
    group.finish();
    fs.remove().unwrap();
}

/// One mail delivery's worth of work: create, write 4 KiB, fsync, unlink.
fn deliver(dir: &Path, n: u64) {
    let path = dir.join(format!("m{n}"));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&[0x61; 4096]).unwrap();
    file.sync_all().unwrap();
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

fn gate_pass_through(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fs = ScratchFs::create(dir.path(), "gated", 256 * MIB, &mut |_, _| Ok(())).unwrap();
    let source = fs.mountpoint().join("source");
    std::fs::create_dir(&source).unwrap();
    let mountpoint = dir.path().join("gate");
    std::fs::create_dir(&mountpoint).unwrap();
    let gate = runtime
        .block_on(Gate::start(&source, &mountpoint, holder(), &mut |_| Ok(())))
        .unwrap();
    let mut group = c.benchmark_group("fs_gate pass-through");
    let mut n = 0;
    group.bench_function("bare: create + write 4 KiB + fsync + unlink", |b| {
        b.iter(|| {
            n += 1;
            deliver(&source, n)
        })
    });
    group.bench_function("gated: create + write 4 KiB + fsync + unlink", |b| {
        b.iter(|| {
            n += 1;
            deliver(&mountpoint, n)
        })
    });
    group.finish();
    runtime.block_on(gate.stop()).unwrap();
    fs.remove().unwrap();
}

criterion_group!(benches, freeze_and_thaw, gate_pass_through);
criterion_main!(benches);
