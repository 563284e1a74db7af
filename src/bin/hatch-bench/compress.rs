//! `compress`: how fast and how small Hatch's artefacts are at each zstd
//! level, on one thread and on every CPU, to choose
//! HATCH_SNAPSHOT_ZSTD_LEVEL's default (docs/benchmarks.md, "zstd level").
//!
//! The data is real: a 512 MiB, one-vCPU Debian VM is created and made
//! ready through Hatch (untimed), snapshotted, and its stored snapshot
//! unpacked: QEMU's migration stream (the guest's memory and device state)
//! and the VM's whole disk. Each round packs both with `snapshot::pack`
//! (what Hatch's background pass runs: holes and zero blocks skipped,
//! SHA-256 of the output) at every level, single-threaded and with one
//! worker per CPU, and unpacks each artefact as a restore does (one pass,
//! hashed, not synced). Nothing else runs in the VM meanwhile: it is
//! `snapshotted`.
//!
//! MB/s are of the data read (the file's allocated bytes, 10^6 per MB);
//! the ratio is those bytes over the artefact's. In the result table a line
//! is "every CPU" next to "1 thread" (ratio: the speed-up); the full grid
//! with the sizes goes to stderr.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use hatch::model::Image;
use hatch::snapshot::{self, Compression, Keep};

use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{summary, Comparison};
use crate::BenchError;

const MEM_MIB: u32 = 512;
const LEVELS: [i32; 4] = [1, 3, 6, 9];

pub async fn run(image: &Image, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let work = ctx.scratch("hatch-bench-compress-")?;
    Hatchd::with_ready_vm(ctx, image, MEM_MIB, async |hatchd, vm_id| {
        let inputs = saved_files(hatchd, vm_id, work.path()).await?;
        measure(&inputs, work.path(), ctx).await
    })
    .await
}

/// One file to pack, with the bytes of data it holds.
struct Input {
    name: &'static str,
    path: std::path::PathBuf,
    data_bytes: u64,
}

/// Snapshots the ready VM and unpacks its stored snapshot:
/// its QEMU state (memory) and disk.
async fn saved_files(hatchd: &Hatchd, vm_id: &str, work: &Path) -> Result<Vec<Input>, BenchError> {
    let snapshot = hatchd.orch.snapshot_vm(vm_id).await.map_err(BenchError::hatch)?;
    let snapshot = crate::hatchd::wait_durable(&hatchd.orch, vm_id, &snapshot.id).await?;
    let unpacked = hatchd
        .orch
        .unpack_snapshot(&snapshot, &work.join("unpacked"))
        .await
        .map_err(BenchError::hatch)?;
    let mut inputs = vec![input("memory (qemu state)", &unpacked.files.state)?];
    if let Some(disk) = &unpacked.disk {
        inputs.push(input("disk", disk)?);
    }
    Ok(inputs)
}

fn input(name: &'static str, path: &Path) -> Result<Input, BenchError> {
    let meta = std::fs::metadata(path).map_err(BenchError::io(format!("reading {}", path.display())))?;
    Ok(Input {
        name,
        path: path.to_owned(),
        // Allocated bytes: what packing reads (holes are skipped).
        data_bytes: (meta.blocks() * 512).min(meta.len()),
    })
}

/// Per round and setting: pack and unpack speed (MB/s) and the ratio.
#[derive(Default)]
struct Cell {
    pack: Vec<f64>,
    unpack: Vec<f64>,
    ratio: f64,
}

async fn measure(inputs: &[Input], work: &Path, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let threads = [0, snapshot::all_cpus()];
    let mut cells: Vec<Vec<[Cell; 2]>> = inputs
        .iter()
        .map(|_| LEVELS.iter().map(|_| Default::default()).collect())
        .collect();
    for round in 1..=ctx.rounds {
        for (i, input) in inputs.iter().enumerate() {
            for (l, &level) in LEVELS.iter().enumerate() {
                for (t, &workers) in threads.iter().enumerate() {
                    let cell = &mut cells[i][l][t];
                    let compression = Compression { level, workers };
                    let (pack, unpack, ratio) = pack_and_unpack(input, compression, work).await?;
                    eprintln!(
                        "round {round} {} level {level} {}: pack {pack:.0} MB/s, unpack {unpack:.0} MB/s, ratio {ratio:.2}",
                        input.name,
                        threads_name(workers)
                    );
                    cell.pack.push(pack);
                    cell.unpack.push(unpack);
                    cell.ratio = ratio;
                }
            }
        }
    }
    eprintln!("{}", grid(inputs, &cells, threads[1]));
    let mut lines = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        for (l, level) in LEVELS.iter().enumerate() {
            let [single, multi] = &cells[i][l];
            let mut line = Comparison::new(
                None,
                format!(
                    "pack {}, zstd level {level}, {} threads (ratio {:.2})",
                    input.name, threads[1], multi.ratio
                ),
                "MB/s",
                "1 thread",
            );
            for (m, s) in multi.pack.iter().zip(&single.pack) {
                line.push(*m, *s);
            }
            lines.push(line);
        }
    }
    Ok(lines)
}

fn threads_name(workers: u32) -> String {
    match workers {
        0 => "1 thread".into(),
        n => format!("{n} threads"),
    }
}

/// Packs `input` as Hatch's background pass does and unpacks the result as
/// a restore does; returns (pack MB/s, unpack MB/s, ratio).
async fn pack_and_unpack(input: &Input, compression: Compression, work: &Path) -> Result<(f64, f64, f64), BenchError> {
    let packed = work.join("packed.zst");
    let started = Instant::now();
    let info = snapshot::pack(&input.path, &packed, compression).await?;
    let pack_time = started.elapsed();

    let restored = work.join("restored");
    let source = std::fs::File::open(&packed).map_err(BenchError::io("opening the artefact"))?;
    let started = Instant::now();
    snapshot::unpack_from(Box::new(source), &info, &restored, Keep::Scratch).await?;
    let unpack_time = started.elapsed();
    for file in [&packed, &restored] {
        std::fs::remove_file(file).map_err(BenchError::io(format!("removing {}", file.display())))?;
    }
    let mb = input.data_bytes as f64 / 1e6;
    Ok((
        mb / pack_time.as_secs_f64(),
        mb / unpack_time.as_secs_f64(),
        input.data_bytes as f64 / info.compressed_bytes as f64,
    ))
}

/// The whole grid as a Markdown table: medians over the rounds.
fn grid(inputs: &[Input], cells: &[Vec<[Cell; 2]>], cpus: u32) -> String {
    let mut out = format!(
        "\n| data | zstd level | ratio, 1 thread / {cpus} threads | pack, 1 thread | pack, {cpus} threads | unpack |\n|---|---|---|---|---|---|\n"
    );
    for (i, input) in inputs.iter().enumerate() {
        for (l, level) in LEVELS.iter().enumerate() {
            let [single, multi] = &cells[i][l];
            out.push_str(&format!(
                "| {} ({:.0} MB of data) | {level} | {:.2} / {:.2} | {:.0} MB/s | {:.0} MB/s | {:.0} MB/s |\n",
                input.name,
                input.data_bytes as f64 / 1e6,
                single.ratio,
                multi.ratio,
                summary(&single.pack).median,
                summary(&multi.pack).median,
                summary(&multi.unpack).median,
            ));
        }
    }
    out
}
