//! Guest images: building them from Debian packages (`debian`, `minimal`),
//! registering existing files, and recognising kernel formats.
//!
//! A build resolves package versions from a private apt state (sources
//! from the host's apt configuration or `HATCH_DEBIAN_MIRROR`), reuses or
//! fills a cache entry keyed by all inputs, then creates
//! `images_dir/<id>/` atomically and returns the [`Image`]; the caller
//! stores it. See docs/images.md for what each profile contains.
use std::path::{Path, PathBuf};

use crate::model::{Image, ImageProfile};

pub mod agent;
mod apt;
pub mod apt_sources;
mod bootargs;
mod byte_progress;
mod cache;
mod confine;
mod cpio;
mod debian;
mod disk;
pub mod elf;
mod error;
mod fsutil;
mod initramfs;
mod kernel;
mod lock;
mod minimal;
mod modules;
mod parts;
mod register;
mod rootfs;
pub mod tools;
mod unpack;
mod vmlinux;

pub use agent::GuestAgent;
pub use apt::{parse_show, PackageInfo};
pub use bootargs::{validate_boot_args, MAX_BOOT_ARGS_LEN};
pub use confine::ImportDirs;
pub use cpio::CpioWriter;
pub use disk::prepare_vm_disk;
pub use error::ImageError;
pub use initramfs::ROOT_LABEL;
pub use kernel::{
    detect_kernel_format, initrd_start_of, inspect_kernel_file, is_newc_cpio, kernel_format_of, read_head, InitrdStart,
    KernelInfo,
};
pub use modules::module_closure;
pub use register::{register_image, validate_image_name, validate_initrd, RegisterRequest};
pub use unpack::resolve_in_root;
pub use vmlinux::{bzimage_payload, extract_vmlinux};

pub use crate::model::KernelFormat;

/// Bumped whenever the build recipe (Rust side) changes what ends up in an
/// image, so stale cache entries are not reused.
const RECIPE_VERSION: &str = "1";

/// Where builds put things and which Debian mirror they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildEnv {
    /// `$HATCH_DATA_DIR/images`: one directory per image id.
    pub images_dir: PathBuf,
    /// `$HATCH_DATA_DIR/cache` unless overridden: apt state, downloaded
    /// .debs and finished artefact sets.
    pub cache_dir: PathBuf,
    /// `HATCH_DEBIAN_MIRROR`; `None` means the host's apt configuration.
    pub debian_mirror: Option<String>,
    /// `HATCH_AGENT_BIN`: the static `hatch-agent` images carry; `None`
    /// means the one beside the running executable (see [`GuestAgent`]).
    pub agent_bin: Option<PathBuf>,
}

impl BuildEnv {
    /// The layout under a data directory, with no mirror override.
    pub fn new(data_dir: &Path) -> Self {
        BuildEnv {
            images_dir: data_dir.join("images"),
            cache_dir: data_dir.join("cache"),
            debian_mirror: None,
            agent_bin: None,
        }
    }

    /// [`BuildEnv::new`] plus `HATCH_DEBIAN_MIRROR`, `HATCH_IMAGE_CACHE_DIR`
    /// and `HATCH_AGENT_BIN` from the environment (empty = unset).
    pub fn from_env(data_dir: &Path) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut env = BuildEnv::new(data_dir);
        env.debian_mirror = var("HATCH_DEBIAN_MIRROR");
        env.agent_bin = var(agent::AGENT_BIN_VAR).map(PathBuf::from);
        if let Some(dir) = var("HATCH_IMAGE_CACHE_DIR") {
            env.cache_dir = PathBuf::from(dir);
        }
        env
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// `Debian` or `Minimal` (`Registered` is not buildable).
    pub profile: ImageProfile,
    /// Defaults to the profile's name.
    pub name: Option<String>,
}

/// What a build is doing, for the CLI to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A build step started.
    Step(String),
    /// A package is being downloaded (`bytes` is the .deb's size).
    Download {
        package: String,
        version: String,
        bytes: u64,
    },
    /// Many packages fetched at once (e.g. by mmdebstrap); `packages` and
    /// `bytes` are estimated from the dependency closure.
    BulkDownload { what: String, packages: usize, bytes: u64 },
    /// How far the download announced last has come: bytes on disk so far
    /// (`total` as announced). Several a second; a progress bar's ticks,
    /// not a line to print.
    Bytes { done: u64, total: u64 },
    /// Artefacts built earlier from identical inputs are reused.
    CacheHit { key: String },
    /// Something worked around (e.g. stale package lists used offline).
    Warning(String),
    /// The image directory exists and is complete.
    Finished { image_id: String, size_bytes: u64 },
}

impl std::fmt::Display for ProgressEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgressEvent::Step(step) => write!(f, "{step}"),
            ProgressEvent::Download {
                package,
                version,
                bytes,
            } => {
                write!(f, "downloading {package} {version} ({:.1} MB)", *bytes as f64 / 1e6)
            }
            ProgressEvent::BulkDownload { what, packages, bytes } => {
                write!(
                    f,
                    "downloading {what}: about {packages} packages, {:.1} MB",
                    *bytes as f64 / 1e6
                )
            }
            ProgressEvent::Bytes { done, total } => write!(f, "{done} of {total} bytes"),
            ProgressEvent::CacheHit { key } => write!(f, "reusing cached build {key}"),
            ProgressEvent::Warning(message) => write!(f, "warning: {message}"),
            ProgressEvent::Finished { image_id, size_bytes } => {
                write!(f, "image {image_id} ready ({:.1} MB)", *size_bytes as f64 / 1e6)
            }
        }
    }
}

impl ProgressEvent {
    /// A tick of a progress bar ([`ProgressEvent::Bytes`]): line-based
    /// output leaves it out.
    pub fn is_tick(&self) -> bool {
        matches!(self, ProgressEvent::Bytes { .. })
    }
}

/// How builders report progress.
pub type ProgressFn<'a> = &'a (dyn Fn(ProgressEvent) + Send + Sync);

/// One build as the profiles' builders get it: the image's name, where it
/// goes, the agent it carries, and where progress is reported.
#[derive(Clone, Copy)]
struct Build<'a> {
    name: &'a str,
    env: &'a BuildEnv,
    agent: &'a GuestAgent,
    progress: ProgressFn<'a>,
}

/// A fresh image id such as `img-k3v9x2ab`.
pub fn new_image_id() -> String {
    crate::model::random_id("img", 8)
}

/// Builds an image of `req.profile` and returns it (not yet stored).
/// On failure nothing is left under `images_dir`.
pub async fn build_image(req: &BuildRequest, env: &BuildEnv, progress: ProgressFn<'_>) -> Result<Image, ImageError> {
    let name = req.name.clone().unwrap_or_else(|| req.profile.as_str().to_string());
    validate_image_name(&name)?;
    let env = BuildEnv {
        images_dir: std::path::absolute(&env.images_dir)
            .map_err(|e| ImageError::io("resolving", &env.images_dir, e))?,
        cache_dir: std::path::absolute(&env.cache_dir).map_err(|e| ImageError::io("resolving", &env.cache_dir, e))?,
        debian_mirror: env.debian_mirror.clone(),
        agent_bin: env.agent_bin.clone(),
    };
    for dir in [
        env.images_dir.clone(),
        env.cache_dir.join("work"),
        env.cache_dir.join("images"),
        env.cache_dir.join("debs"),
    ] {
        fsutil::remove_stale_staging(&dir);
    }
    if req.profile == ImageProfile::Registered {
        return Err(ImageError::Invalid {
            field: "profile",
            message: "`registered` images are registered, not built; use debian or minimal".into(),
        });
    }
    let agent = GuestAgent::locate(env.agent_bin.as_deref())?;
    let build = Build {
        name: &name,
        env: &env,
        agent: &agent,
        progress,
    };
    let image = match req.profile {
        ImageProfile::Minimal => minimal::build(build).await?,
        ImageProfile::Debian => debian::build(build).await?,
        ImageProfile::Registered => unreachable!("refused above"),
    };
    cache::prune_unused(&env.cache_dir.join("images"), cache::UNUSED_LIFETIME);
    cache::prune_unused(&env.cache_dir.join("debs"), cache::UNUSED_LIFETIME);
    progress(ProgressEvent::Finished {
        image_id: image.id.clone(),
        size_bytes: image.size_bytes,
    });
    Ok(image)
}

/// The Image for files installed in `dir` (named as in the cache entry).
fn image_from_dir(
    dir: &Path,
    id: String,
    name: &str,
    profile: ImageProfile,
    login_user: &str,
    boot_args: &str,
) -> Image {
    let file = |name: &str| Some(dir.join(name)).filter(|p| p.exists());
    let size_bytes = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| fsutil::file_len(&e.path())).sum())
        .unwrap_or(0);
    Image {
        id,
        name: name.to_string(),
        profile,
        kernel_path: file(parts::VMLINUX),
        bzimage_path: file(parts::BZIMAGE),
        initrd_path: file(parts::INITRAMFS),
        rootfs_path: file(parts::ROOTFS),
        login_user: login_user.to_string(),
        boot_args: boot_args.to_string(),
        size_bytes,
        created_at: crate::model::now(),
    }
}
