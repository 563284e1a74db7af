//! `disk`: snapshot and restore of a Debian VM with its disk, through
//! Hatch's orchestration, next to the hypervisor's own save/load plus a
//! plain `cp --sparse=always` of the disk.
//!
//! Kept on its own: how Hatch clones and stores disks is changing, and
//! this measurement stays the same whatever Hatch does inside.
//!
//! One 512 MiB, one-vCPU Debian VM is created and made ready (untimed).
//! Each round:
//! 1. **hatch snapshot**: `snapshot_vm` until it returns (the VM is
//!    `snapshotted`); then, untimed, until the background pass has made
//!    the snapshot durable, so its work is in neither column;
//! 2. **baseline**: that snapshot's state and disk, unpacked (untimed),
//!    loaded into a fresh QEMU with the VM's launch (same TAP and MAC) and
//!    a disk of its own. Timed snapshot: QEMU's save (`migrate` to a file)
//!    plus `cp --sparse=always` of the disk; the QEMU is then killed. Timed
//!    restore: `cp --sparse=always` of the saved disk back, and QEMU
//!    loading the saved state until it runs;
//! 3. **hatch restore**: `restore_vm` until it returns (the VM runs);
//!    the snapshot is then deleted so the store does not grow.
//!
//! Neither column syncs its copies to disk before it is timed as done.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hatch::model::{Image, Snapshot};
use hatch::vmm::{Hypervisor, SnapshotFiles, VmLaunch};

use crate::copy::cp_sparse;
use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{millis, Comparison};
use crate::BenchError;

const MEM_MIB: u32 = 512;

pub async fn run(image: &Image, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    Hatchd::with_ready_vm(ctx, image, MEM_MIB, async |hatchd, vm_id| {
        rounds(hatchd, vm_id, ctx).await
    })
    .await
}

async fn rounds(hatchd: &Hatchd, vm_id: &str, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let hypervisor = hatchd.hypervisor()?;
    let baseline_name = "qemu save/load + cp --sparse=always";
    let mut snapshot_line = Comparison::new(
        Some("disk_snapshot_ratio"),
        format!("snapshot with disk, debian, {MEM_MIB} MiB"),
        "ms",
        baseline_name,
    );
    let mut restore_line = Comparison::new(
        Some("disk_restore_ratio"),
        format!("restore with disk until running, debian, {MEM_MIB} MiB"),
        "ms",
        baseline_name,
    );
    for round in 1..=ctx.rounds {
        let started = Instant::now();
        let snapshot = hatchd.orch.snapshot_vm(vm_id).await.map_err(BenchError::hatch)?;
        let hatch_snapshot = started.elapsed();
        let snapshot = crate::hatchd::wait_durable(&hatchd.orch, vm_id, &snapshot.id).await?;

        let (base_snapshot, base_restore) = baseline(hatchd, &hypervisor, vm_id, &snapshot, ctx).await?;

        let started = Instant::now();
        hatchd
            .orch
            .restore_vm(vm_id, Some(&snapshot.id))
            .await
            .map_err(BenchError::hatch)?;
        let hatch_restore = started.elapsed();
        if let Err(error) = hatchd.orch.delete_snapshot(&snapshot.id).await {
            eprintln!("hatch-bench: deleting snapshot {}: {error}", snapshot.id);
        }
        eprintln!(
            "round {round}: snapshot hatch {:.0} ms, qemu+cp {:.0} ms; restore hatch {:.0} ms, cp+qemu {:.0} ms",
            millis(hatch_snapshot),
            millis(base_snapshot),
            millis(hatch_restore),
            millis(base_restore)
        );
        snapshot_line.push(millis(hatch_snapshot), millis(base_snapshot));
        restore_line.push(millis(hatch_restore), millis(base_restore));
    }
    Ok(vec![snapshot_line, restore_line])
}

/// QEMU's own save and load of the same VM with a plain copy of its disk:
/// returns (snapshot, restore) times.
async fn baseline(
    hatchd: &Hatchd,
    hypervisor: &Arc<dyn Hypervisor>,
    vm_id: &str,
    snapshot: &Snapshot,
    ctx: &Ctx,
) -> Result<(Duration, Duration), BenchError> {
    let work = ctx.scratch("hatch-bench-disk-")?;
    let unpacked = hatchd
        .orch
        .unpack_snapshot(snapshot, &work.path().join("unpacked"))
        .await
        .map_err(BenchError::hatch)?;
    let saved_disk = unpacked
        .disk
        .ok_or_else(|| BenchError::Hatch("the snapshot has no disk".into()))?;
    let vm = hatchd.orch.get_vm(vm_id).await.map_err(BenchError::hatch)?;
    let live_disk = work.path().join("disk.img");
    let spec = own_disk(
        hatchd.orch.launch_spec_of(&vm).await.map_err(BenchError::hatch)?,
        work.path(),
        &live_disk,
    );
    tokio::fs::rename(&saved_disk, &live_disk)
        .await
        .map_err(BenchError::io("moving the unpacked disk"))?;
    let running = hypervisor.restore(&spec, &unpacked.files).await?;
    let running = ctx.guests.register(running).await;

    let saved = work.path().join("saved");
    let started = Instant::now();
    let files = running.handle.save_snapshot(&saved).await?;
    cp_sparse(&live_disk, &saved.join("disk.img")).await?;
    let snapshot_time = started.elapsed();
    ctx.guests.stop(running).await;

    tokio::fs::remove_file(&live_disk)
        .await
        .map_err(BenchError::io("removing the disk"))?;
    let started = Instant::now();
    cp_sparse(&saved.join("disk.img"), &live_disk).await?;
    let restored = hypervisor
        .restore(
            &spec,
            &SnapshotFiles {
                state: files.state,
                memory: files.memory,
            },
        )
        .await?;
    let restore_time = started.elapsed();
    let restored = ctx.guests.register(restored).await;
    ctx.guests.stop(restored).await;
    Ok((snapshot_time, restore_time))
}

/// The VM's launch with its run directory and root disk in `work`.
fn own_disk(mut spec: VmLaunch, work: &Path, disk: &Path) -> VmLaunch {
    spec.run_dir = work.join("run");
    for d in &mut spec.disks {
        if d.id == "rootfs" {
            d.path = PathBuf::from(disk);
        }
    }
    spec
}
