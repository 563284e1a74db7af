//! `--disk ROOTFS`: what a VM's disk costs, on an image's root filesystem
//! (no guest runs):
//! - create: the disk clone Hatch makes (`hatch::sys::clone_file`) against
//!   `cp --sparse=always` of the same file, alternating, page cache warm
//!   for both, `sync` between runs outside the timing;
//! - snapshot: the stored disk as its blocks that differ from the image
//!   (`disk-diff.zst`) against the whole disk packed (`disk.zst`, what was
//!   stored before), after a stand-in for the guest wrote `CHANGED_MIB`
//!   in 64 KiB blocks at random places (over data and into holes);
//! - restore: rebuilding the disk from each.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};

use hatch::snapshot::{pack, pack_disk_diff, unpack, unpack_disk_diff, ArtefactInfo, DISK_DIFF_BLOCK};
use hatch::sys::clone_file::clone_file;

use crate::BenchError;

/// What the stand-in guest writes before the snapshot.
const CHANGED_MIB: u64 = 32;

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

fn timed<T>(work: impl FnOnce() -> Result<T, BenchError>) -> Result<(Duration, T), BenchError> {
    let started = Instant::now();
    let value = work()?;
    Ok((started.elapsed(), value))
}

/// `cp --sparse=always`, the baseline a plain user would run.
fn cp_sparse(src: &Path, dest: &Path) -> Result<(), BenchError> {
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(dest)
        .status()
        .map_err(io_error("running cp"))?;
    match status.success() {
        true => Ok(()),
        false => Err(BenchError::Hatch(format!("cp failed ({status})"))),
    }
}

/// Writes `CHANGED_MIB` of random 64 KiB blocks at random block offsets.
fn scribble(disk: &Path) -> Result<(), BenchError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::options()
        .write(true)
        .open(disk)
        .map_err(io_error("opening the disk"))?;
    let blocks = file.metadata().map_err(io_error("disk size"))?.len() / DISK_DIFF_BLOCK;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut block = vec![0u8; DISK_DIFF_BLOCK as usize];
    for _ in 0..CHANGED_MIB * (1 << 20) / DISK_DIFF_BLOCK {
        rng.fill_bytes(&mut block);
        let at = rng.gen_range(0..blocks) * DISK_DIFF_BLOCK;
        file.write_all_at(&block, at).map_err(io_error("writing the disk"))?;
    }
    file.sync_all().map_err(io_error("syncing the disk"))
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn seconds(values: &mut [Duration]) -> String {
    let med = median(values);
    format!(
        "{:.3} s ({:.3}-{:.3})",
        med.as_secs_f64(),
        values[0].as_secs_f64(),
        values[values.len() - 1].as_secs_f64()
    )
}

fn ratio(a: &mut [Duration], b: &mut [Duration]) -> String {
    format!("{:.2}x", median(a).as_secs_f64() / median(b).as_secs_f64())
}

pub async fn run(rootfs: &Path, work_dir: &Path, rounds: usize) -> Result<String, BenchError> {
    if rounds == 0 {
        return Err(BenchError::NoRounds);
    }
    let scratch = tempfile::Builder::new()
        .prefix("snapshot-bench-disk-")
        .tempdir_in(work_dir)
        .map_err(io_error("creating a scratch directory"))?;
    let dir = scratch.path();
    let remove = |path: &Path| {
        let _ = std::fs::remove_file(path);
        nix::unistd::sync();
    };

    // Create: clone against cp, alternating which goes first.
    let (mut clones, mut copies) = (Vec::new(), Vec::new());
    let mut method = None;
    let copy = dir.join("copy");
    for round in 0..rounds {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                let (took, how) = timed(|| clone_file(rootfs, &copy).map_err(io_error("cloning")))?;
                clones.push(took);
                method = Some(how);
            } else {
                copies.push(timed(|| cp_sparse(rootfs, &copy))?.0);
            }
            remove(&copy);
        }
    }

    // Snapshot and restore of a disk the "guest" changed.
    let disk = dir.join("disk");
    clone_file(rootfs, &disk).map_err(io_error("cloning"))?;
    scribble(&disk)?;
    let (diff_zst, full_zst) = (dir.join("disk-diff.zst"), dir.join("disk.zst"));
    let restored = dir.join("restored");
    let (mut pack_diff, mut pack_full, mut unpack_diff, mut unpack_full) = (vec![], vec![], vec![], vec![]);
    let (mut diff_info, mut full_info): (Option<ArtefactInfo>, Option<ArtefactInfo>) = (None, None);
    for _ in 0..rounds {
        let started = Instant::now();
        let info = pack_disk_diff(&disk, rootfs, "bench", &diff_zst).await?;
        pack_diff.push(started.elapsed());
        let started = Instant::now();
        unpack_disk_diff(&diff_zst, &info, rootfs, &restored).await?;
        unpack_diff.push(started.elapsed());
        remove(&restored);
        diff_info = Some(info);

        let started = Instant::now();
        let info = pack(&disk, &full_zst).await?;
        pack_full.push(started.elapsed());
        let started = Instant::now();
        unpack(&full_zst, &info, &restored).await?;
        unpack_full.push(started.elapsed());
        remove(&restored);
        full_info = Some(info);
    }
    let (Some(diff), Some(full), Some(method)) = (diff_info, full_info, method) else {
        return Err(BenchError::NoRounds);
    };
    let size_mib = std::fs::metadata(rootfs).map_err(io_error("rootfs size"))?.len() >> 20;
    Ok(format!(
        "\n{rounds} rounds, {} ({size_mib} MiB), clone made by {}; the disk then got {CHANGED_MIB} MiB of random 64 KiB writes\n\n\
         | measure | Hatch | baseline | Hatch / baseline |\n|---|---|---|---|\n\
         | create: disk copy | {} (clone) | {} (cp --sparse=always) | {} |\n\
         | snapshot: disk bytes stored | {} (disk-diff.zst) | {} (disk.zst, whole disk) | {:.3} |\n\
         | snapshot: packing the disk | {} | {} | {} |\n\
         | restore: rebuilding the disk | {} | {} | {} |\n",
        rootfs.display(),
        method.as_str(),
        seconds(&mut clones),
        seconds(&mut copies),
        ratio(&mut clones, &mut copies),
        diff.compressed_bytes,
        full.compressed_bytes,
        diff.compressed_bytes as f64 / full.compressed_bytes as f64,
        seconds(&mut pack_diff),
        seconds(&mut pack_full),
        ratio(&mut pack_diff, &mut pack_full),
        seconds(&mut unpack_diff),
        seconds(&mut unpack_full),
        ratio(&mut unpack_diff, &mut unpack_full),
    ))
}
