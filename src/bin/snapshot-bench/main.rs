//! snapshot-bench: snapshot and restore time and stored size of a 256 MiB
//! QEMU TCG guest (the `minimal` image), Hatch's path next to QEMU's own
//! raw save and load of the same guest, in one run.
//!
//! Uses the library directly: no daemon, and the guest has no NIC, so no
//! network namespace is involved. Rounds alternate which method goes first
//! so that noise from other work on the machine spreads over both columns.
//!
//! With `--wake` it measures instead a request that wakes a snapshotted VM
//! through Hatch's proxy against QEMU's own load of the same state (see
//! `wake.rs`); that mode needs root and runs inside a network namespace it
//! creates and deletes.
//!
//! With `--disk ROOTFS` it measures a VM's disk instead: the clone a create
//! makes, and the disk a snapshot stores and a restore rebuilds (see
//! `disk.rs`); no guest runs.

mod disk;
mod guest;
mod measure;
mod netns;
mod report;
mod wake;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use hatch::image::{build_image, BuildEnv, BuildRequest, ImageError, ProgressEvent};
use hatch::model::{Image, ImageProfile};
use hatch::snapshot::SnapshotError;
use hatch::vmm::VmmError;

use guest::Guests;
use measure::{Bench, Method, Sample};

#[derive(Parser)]
#[command(about = "Benchmark Hatch's snapshot/restore against QEMU's own save/load")]
struct Args {
    /// Rounds; each round measures both methods once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Data directory for building (or reusing) the minimal image; the
    /// default is the one the tests use, so their build cache is shared.
    #[arg(long, default_value = "target/tmp/hatch-images")]
    image_dir: PathBuf,
    /// Where run directories and state files go (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Guest memory.
    #[arg(long, default_value_t = 256)]
    mem_mib: u32,
    /// Measure wake-on-request through Hatch's proxy against QEMU's own
    /// load of the same state instead (needs root: runs Hatch's networking
    /// inside a network namespace it creates).
    #[arg(long)]
    wake: bool,
    /// Measure a VM's disk made from this root filesystem image instead
    /// (clone against `cp --sparse=always`; stored disk against a full copy).
    #[arg(long, value_name = "ROOTFS")]
    disk: Option<PathBuf>,
    /// Internal: the `--wake` rounds, already inside the namespace, for
    /// the image described in this JSON file.
    #[arg(long, hide = true)]
    wake_image: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("qemu-system-x86_64 was not found on PATH")]
    QemuMissing,
    #[error("--rounds must be at least 1")]
    NoRounds,
    #[error("building the minimal image failed: {0}")]
    Image(#[from] ImageError),
    #[error("VMM: {0}")]
    Vmm(#[from] VmmError),
    #[error("snapshot artefact: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("timed out waiting for {what}; the serial console ends with:\n{serial_tail}")]
    Timeout { what: String, serial_tail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("network namespace: {0}")]
    Namespace(String),
    #[error("Hatch: {0}")]
    Hatch(String),
    #[error("HTTP: {0}")]
    Http(String),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let guests = Guests::default();
    let outcome = match (&args.disk, &args.wake_image, args.wake) {
        (Some(rootfs), _, _) => disk::run(rootfs, &args.work_dir, args.rounds).await,
        (None, None, true) => run_wake(&args).await,
        (None, Some(image_file), _) => tokio::select! {
            outcome = run_wake_rounds(&args, image_file, &guests) => outcome,
            _ = interrupted() => Err(BenchError::Interrupted),
        },
        (None, None, false) => tokio::select! {
            outcome = run(&args, &guests) => outcome,
            _ = interrupted() => Err(BenchError::Interrupted),
        },
    };
    // Whatever happened, no QEMU outlives the benchmark.
    guests.stop_all().await;
    match outcome {
        Ok(table) => {
            println!("{table}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("snapshot-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `--wake`: builds the image here, then runs this program again under
/// `ip netns exec` in a namespace made for the run (which also gives it its
/// own /sys, where the namespace's TAPs show), and deletes the namespace
/// with everything still in it afterwards, also after Ctrl-C.
async fn run_wake(args: &Args) -> Result<String, BenchError> {
    if args.rounds == 0 {
        return Err(BenchError::NoRounds);
    }
    let (image, image_copy) = minimal_image(&args.image_dir).await?;
    let _image_copy = RemoveDirOnDrop(image_copy);
    let io_error = |context: &str| {
        let context = context.to_string();
        move |source| BenchError::Io { context, source }
    };
    let scratch = tempfile::Builder::new()
        .prefix("snapshot-bench-wake-")
        .tempdir_in(&args.work_dir)
        .map_err(io_error("creating a scratch directory"))?;
    let image_file = scratch.path().join("image.json");
    let image_json = serde_json::to_vec(&image).map_err(|e| BenchError::Hatch(e.to_string()))?;
    std::fs::write(&image_file, image_json).map_err(io_error("writing the image description"))?;
    let namespace = netns::BenchNetns::create()?;
    eprintln!("running in network namespace {}", namespace.name());
    let program = std::env::current_exe().map_err(io_error("finding this program"))?;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace.name()])
        .arg(program)
        .arg("--wake-image")
        .arg(&image_file)
        .args([
            "--rounds",
            &args.rounds.to_string(),
            "--mem-mib",
            &args.mem_mib.to_string(),
        ])
        .arg("--work-dir")
        .arg(&args.work_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(io_error("starting the measuring process"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let read_table = async {
        let mut table = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut table)
            .await
            .map(|_| table)
    };
    // Ctrl-C reaches the child too; it cleans up, and we wait for it.
    let (status, table) = tokio::select! {
        done = async { tokio::join!(child.wait(), read_table) } => done,
        _ = interrupted() => return child.wait().await.map_err(io_error("waiting")).and(Err(BenchError::Interrupted)),
    };
    let status = status.map_err(io_error("waiting for the measuring process"))?;
    let table = table.map_err(io_error("reading the result"))?;
    if !status.success() {
        return Err(BenchError::Hatch(format!("the measuring process failed ({status})")));
    }
    Ok(table)
}

/// Inside the namespace (`--wake-image`): the rounds themselves.
async fn run_wake_rounds(args: &Args, image_file: &std::path::Path, guests: &Guests) -> Result<String, BenchError> {
    let json = std::fs::read(image_file).map_err(|source| BenchError::Io {
        context: format!("reading {}", image_file.display()),
        source,
    })?;
    let image: Image =
        serde_json::from_slice(&json).map_err(|e| BenchError::Hatch(format!("{}: {e}", image_file.display())))?;
    let samples = wake::run(&image, &args.work_dir, args.rounds, args.mem_mib, guests).await?;
    Ok(format!(
        "\n{} rounds, {} MiB guest, QEMU TCG, minimal image, busybox httpd\n\n{}",
        args.rounds,
        args.mem_mib,
        report::wake_table(&samples)
    ))
}

async fn run(args: &Args, guests: &Guests) -> Result<String, BenchError> {
    if args.rounds == 0 {
        return Err(BenchError::NoRounds);
    }
    let hypervisor = guest::qemu_tcg()?;
    let (image, image_copy) = minimal_image(&args.image_dir).await?;
    let _image_copy = RemoveDirOnDrop(image_copy);
    let bench = Bench {
        hypervisor,
        image,
        guests: guests.clone(),
        work_dir: args.work_dir.clone(),
        mem_mib: args.mem_mib,
    };
    let [raw, hatch, stored] = rounds(&bench, args.rounds).await?;
    Ok(format!(
        "\n{} rounds, {} MiB guest, QEMU TCG, minimal image\n\nHatch from its local hot copy (restore and wake use it while it is valid):\n\n{}\nHatch from the stored artefact (the fallback when the hot copy is gone or damaged):\n\n{}",
        args.rounds,
        args.mem_mib,
        report::table(&raw, &hatch),
        report::table(&raw, &stored)
    ))
}

/// Every round measures each method once, in an order that rotates, so
/// that noise from other work spreads over all columns.
async fn rounds(bench: &Bench, count: usize) -> Result<[Vec<Sample>; 3], BenchError> {
    const METHODS: [Method; 3] = [Method::Raw, Method::Hatch, Method::HatchStored];
    let mut samples: [Vec<Sample>; 3] = Default::default();
    for round in 1..=count {
        for k in 0..METHODS.len() {
            let index = (round + k) % METHODS.len();
            let sample = bench.round(METHODS[index]).await?;
            eprintln!("{}", report::round_line(round, METHODS[index].name(), &sample));
            samples[index].push(sample);
        }
    }
    Ok(samples)
}

/// Builds (or takes from the build cache) the minimal image; also returns
/// the image's own directory so it can be removed afterwards.
async fn minimal_image(data_dir: &std::path::Path) -> Result<(Image, PathBuf), BenchError> {
    let env = BuildEnv::from_env(data_dir);
    let request = BuildRequest {
        profile: ImageProfile::Minimal,
        name: None,
    };
    let started = Instant::now();
    let print = |event: ProgressEvent| {
        eprintln!("[image +{:.1}s] {event}", started.elapsed().as_secs_f64());
    };
    let image = build_image(&request, &env, &print).await?;
    let image_dir = std::path::absolute(&env.images_dir)
        .unwrap_or_else(|_| env.images_dir.clone())
        .join(&image.id);
    Ok((image, image_dir))
}

/// The image's own directory holds hard links into the build cache: cheap
/// to drop, and the cache keeps the files for the next run. Removed also
/// when the run is interrupted (its future dropped).
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
