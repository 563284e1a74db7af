//! The benchmark's rows: what each measures (one module each), the JSON
//! keys it answers, and why a row that did not run was skipped.

use std::path::PathBuf;

use hatch::model::Image;

use crate::guest::Guests;
use crate::images::Inputs;
use crate::stats::Comparison;
use crate::BenchError;

/// One `--only` name; a row may answer several of the table's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Row {
    #[value(name = "snapshot")]
    Snapshot,
    #[value(name = "wake")]
    Wake,
    #[value(name = "create_ssh_minimal")]
    CreateSshMinimal,
    #[value(name = "create_ssh_debian")]
    CreateSshDebian,
    #[value(name = "proxy")]
    Proxy,
    #[value(name = "api_list")]
    ApiList,
    #[value(name = "disk")]
    Disk,
    #[value(name = "fork")]
    Fork,
    /// zstd levels and threads for HATCH_SNAPSHOT_ZSTD_LEVEL; only with
    /// `--only compress` (not one of the table's rows).
    #[value(name = "compress")]
    Compress,
}

impl Row {
    /// In the order they run (cheap rows first).
    pub const ALL: [Row; 9] = [
        Row::ApiList,
        Row::Proxy,
        Row::Snapshot,
        Row::Wake,
        Row::CreateSshMinimal,
        Row::Fork,
        Row::CreateSshDebian,
        Row::Disk,
        Row::Compress,
    ];

    /// Whether a run without `--only` measures this row.
    pub fn by_default(self) -> bool {
        self != Row::Compress
    }

    pub fn name(self) -> &'static str {
        match self {
            Row::Snapshot => "snapshot",
            Row::Wake => "wake",
            Row::CreateSshMinimal => "create_ssh_minimal",
            Row::CreateSshDebian => "create_ssh_debian",
            Row::Proxy => "proxy",
            Row::ApiList => "api_list",
            Row::Disk => "disk",
            Row::Fork => "fork",
            Row::Compress => "compress",
        }
    }

    /// The JSON keys (issue #13's table) this row answers.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Row::Snapshot => &["snapshot_ratio", "restore_ratio"],
            Row::Wake => &["wake_first_byte_ratio"],
            Row::CreateSshMinimal => &["create_ssh_ratio_minimal"],
            Row::CreateSshDebian => &["create_ssh_ratio_debian"],
            Row::Proxy => &["proxy_rps_ratio", "proxy_p99_ratio"],
            Row::ApiList => &["api_list_p99_ms"],
            Row::Disk => &["disk_snapshot_ratio", "disk_restore_ratio"],
            Row::Fork => &["fork_ready_ratio", "pool_ready_ratio"],
            Row::Compress => &[],
        }
    }

    pub async fn run(self, ctx: &Ctx) -> Result<Vec<Comparison>, Skip> {
        let measured = match self {
            Row::Snapshot => crate::snapshot::run(ctx.image(&ctx.inputs.minimal)?, ctx).await,
            Row::Wake => crate::wake::run(ctx.image(&ctx.inputs.minimal)?, ctx).await,
            Row::CreateSshMinimal => crate::create_ssh::run(ctx.image(&ctx.inputs.minimal)?, 256, ctx).await,
            Row::CreateSshDebian => crate::create_ssh::run(ctx.image(&ctx.inputs.debian)?, 512, ctx).await,
            Row::Proxy => match crate::proxy::nginx::find() {
                Some(nginx) => crate::proxy::run(&nginx, ctx).await,
                None => {
                    return Err(Skip::Missing(
                        "nginx is not installed (scripts/install-deps installs nginx-light)".into(),
                    ))
                }
            },
            Row::ApiList => crate::api_list::run(ctx).await,
            Row::Disk => crate::disk::run(ctx.image(&ctx.inputs.debian)?, ctx).await,
            Row::Fork => crate::fork::run(ctx.image(&ctx.inputs.minimal)?, ctx).await,
            Row::Compress => crate::compress::run(ctx.image(&ctx.inputs.debian)?, ctx).await,
        };
        measured.map_err(|e| Skip::Failed(e.to_string()))
    }
}

/// Why a row has no numbers.
#[derive(Debug)]
pub enum Skip {
    NotSelected,
    /// An input is missing (image, nginx).
    Missing(String),
    Failed(String),
}

impl Skip {
    pub fn reason(&self) -> String {
        match self {
            Skip::NotSelected => "not selected (--only)".into(),
            Skip::Missing(what) => what.clone(),
            Skip::Failed(error) => format!("failed: {error}"),
        }
    }
}

/// What every row gets.
pub struct Ctx {
    pub inputs: Inputs,
    pub guests: Guests,
    pub work_dir: PathBuf,
    pub rounds: usize,
}

impl Ctx {
    pub fn image<'a>(&self, image: &'a Result<Image, String>) -> Result<&'a Image, Skip> {
        image.as_ref().map_err(|reason| Skip::Missing(reason.clone()))
    }

    /// A fresh directory under the work directory, removed when dropped.
    pub fn scratch(&self, prefix: &str) -> Result<tempfile::TempDir, BenchError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.work_dir)
            .map_err(BenchError::io(format!(
                "creating a directory in {}",
                self.work_dir.display()
            )))
    }
}
