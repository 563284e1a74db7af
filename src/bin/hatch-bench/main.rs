//! hatch-bench: every row of issue #13's table in one run, Hatch next to
//! its baseline (QEMU's own save/load, a QEMU launched by hand, nginx), each
//! round measuring both, with median/min/max and the ratio of the medians;
//! `--json` prints one object keyed by the table's rows.
//!
//! Needs root: the guests' bridge, TAPs, dnsmasq and iptables rules live in
//! a network namespace the run creates and deletes (`netns.rs`). The images
//! are built (or taken from the build cache) outside it, then this program
//! runs itself again under `ip netns exec` to measure (`--inputs`).

mod api_list;
mod compress;
mod copy;
mod create_ssh;
mod disk;
mod fork;
mod guest;
mod hatchd;
mod images;
mod netns;
mod proxy;
mod report;
mod rows;
mod snapshot;
mod stats;
mod wake;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use hatch::image::ImageError;
use hatch::snapshot::SnapshotError;
use hatch::vmm::VmmError;

use guest::Guests;
use rows::Row;

#[derive(Parser)]
#[command(about = "Benchmark Hatch against the hypervisor and nginx, every row of docs/benchmarks.md in one run")]
pub struct Args {
    /// Rounds; each round measures Hatch and its baseline once per row.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Only these rows (comma-separated); the others are reported as skipped.
    /// `compress` (zstd levels, not a row of the table) runs only when named.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Row>,
    /// Print one JSON object (the table's rows as keys) on stdout; the
    /// human-readable table goes to stderr.
    #[arg(long)]
    json: bool,
    /// Data directory for building (or reusing) the images; the default is
    /// the one the tests use, so their build cache is shared.
    #[arg(long, default_value = "target/tmp/hatch-images")]
    image_dir: PathBuf,
    /// Where data directories, disks and state files go (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Internal: already inside the namespace, with the images described
    /// in this JSON file.
    #[arg(long, hide = true)]
    inputs: Option<PathBuf>,
}

impl Args {
    fn selected(&self, row: Row) -> bool {
        (self.only.is_empty() && row.by_default()) || self.only.contains(&row)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("qemu-system-x86_64 was not found on PATH")]
    QemuMissing,
    #[error("--rounds must be at least 1")]
    NoRounds,
    #[error("hatch-bench needs root: it creates a network namespace for the guests' networking")]
    NotRoot,
    #[error("building an image failed: {0}")]
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

impl BenchError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }

    /// Any error from Hatch's own layers, by its message.
    pub fn hatch(error: impl std::fmt::Display) -> BenchError {
        BenchError::Hatch(error.to_string())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hatch-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match &args.inputs {
        Some(inputs) => runtime.block_on(inside(&args, inputs)),
        None => runtime.block_on(outside(&args)),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hatch-bench: {e}");
            ExitCode::FAILURE
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

/// Builds the images the selected rows need, then runs this program again
/// under `ip netns exec` in a namespace made for the run (which also gives
/// it its own /sys, where the namespace's TAPs show), and deletes the
/// namespace with everything still in it afterwards, also after Ctrl-C.
async fn outside(args: &Args) -> Result<ExitCode, BenchError> {
    if args.rounds == 0 {
        return Err(BenchError::NoRounds);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let scratch = tempfile::Builder::new()
        .prefix("hatch-bench-")
        .tempdir_in(&args.work_dir)
        .map_err(BenchError::io("creating a scratch directory"))?;
    let inputs = images::prepare(args, &args.image_dir).await;
    let inputs_file = scratch.path().join("inputs.json");
    std::fs::write(&inputs_file, serde_json::to_vec(&inputs).map_err(BenchError::hatch)?)
        .map_err(BenchError::io("writing the inputs"))?;
    let namespace = netns::BenchNetns::create()?;
    eprintln!("running in network namespace {}", namespace.name());
    let program = std::env::current_exe().map_err(BenchError::io("finding this program"))?;
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", namespace.name()])
        .arg(program)
        .arg("--inputs")
        .arg(&inputs_file)
        .args(["--rounds", &args.rounds.to_string()])
        .arg("--work-dir")
        .arg(&args.work_dir);
    if !args.only.is_empty() {
        let only: Vec<&str> = args.only.iter().map(|row| row.name()).collect();
        command.args(["--only", &only.join(",")]);
    }
    if args.json {
        command.arg("--json");
    }
    let mut child = command
        .spawn()
        .map_err(BenchError::io("starting the measuring process"))?;
    // Ctrl-C reaches the child too; it cleans up, and we wait for it.
    let status = tokio::select! {
        status = child.wait() => status,
        _ = interrupted() => child.wait().await,
    }
    .map_err(BenchError::io("waiting for the measuring process"))?;
    images::remove_image_dirs(&inputs);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Inside the namespace: every selected row in turn. A row that cannot run
/// (missing input, failure) is reported as skipped with the reason; the
/// others still run.
async fn inside(args: &Args, inputs_file: &Path) -> Result<ExitCode, BenchError> {
    let json = std::fs::read(inputs_file).map_err(BenchError::io(format!("reading {}", inputs_file.display())))?;
    let inputs: images::Inputs = serde_json::from_slice(&json).map_err(BenchError::hatch)?;
    let ctx = rows::Ctx {
        inputs,
        guests: Guests::default(),
        work_dir: args.work_dir.clone(),
        rounds: args.rounds,
    };
    let mut outcomes = Vec::new();
    for row in Row::ALL
        .into_iter()
        .filter(|row| row.by_default() || args.selected(*row))
    {
        let result = if args.selected(row) {
            eprintln!("== {} ==", row.name());
            let result = tokio::select! {
                result = row.run(&ctx) => result,
                _ = interrupted() => Err(rows::Skip::Failed(BenchError::Interrupted.to_string())),
            };
            // Whatever happened, no QEMU outlives its row.
            ctx.guests.stop_all().await;
            if let Err(rows::Skip::Failed(reason)) = &result {
                eprintln!("{}: {reason}", row.name());
            }
            result
        } else {
            Err(rows::Skip::NotSelected)
        };
        let interrupted = matches!(&result, Err(rows::Skip::Failed(r)) if r == "interrupted");
        outcomes.push(report::Outcome { row, result });
        if interrupted {
            break;
        }
    }
    let table = report::table(&outcomes, args.rounds);
    if args.json {
        eprintln!("{table}");
        println!("{}", report::json(&outcomes));
    } else {
        println!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}
