//! The `minimal` profile: the Debian cloud kernel and an initramfs with
//! busybox, dropbear, hatch-agent and Hatch's own /init (no root filesystem).
use std::path::Path;

use super::agent::GuestAgent;
use super::apt::Apt;
use super::apt_sources::build_sources;
use super::cache::{get_or_build, install_from_cache, CacheKey};
use super::fsutil::StagingDir;
use super::initramfs::{build_initramfs, recipe_fingerprint, InitMode, InitramfsInputs};
use super::parts::{
    prepare_busybox, prepare_dropbear, prepare_kernel, resolve_base_packages, BasePackages, KernelTree, BZIMAGE,
    INITRAMFS, VMLINUX,
};
use super::tools::{self, APT_CACHE, APT_GET, DEPMOD, DPKG_DEB};
use super::{image_from_dir, new_image_id, Build, BuildEnv, ImageError, ProgressEvent, ProgressFn, RECIPE_VERSION};
use crate::model::{Image, ImageProfile};

pub const BASE_TOOLS: [tools::Tool; 4] = [APT_GET, APT_CACHE, DPKG_DEB, DEPMOD];

/// The private apt state for `env`; `resolve` runs with fresh package
/// lists and the apt state locked (released before anything is downloaded).
pub async fn with_fresh_lists<T>(
    env: &BuildEnv,
    progress: ProgressFn<'_>,
    resolve: impl AsyncFnOnce(&Apt) -> Result<T, ImageError>,
) -> Result<(Apt, T), ImageError> {
    let sources = build_sources(env.debian_mirror.as_deref(), Path::new("/etc/apt"))?;
    let apt = Apt::new(&env.cache_dir, sources);
    let lock = apt.lock().await?;
    apt.update(progress).await?;
    progress(ProgressEvent::Step("resolving package versions".into()));
    let resolved = resolve(&apt).await?;
    drop(lock);
    Ok((apt, resolved))
}

/// The cache key parts every profile shares (every profile carries the agent).
pub fn base_key(profile: &str, apt: &Apt, packages: &BasePackages, mode: InitMode, agent: &GuestAgent) -> CacheKey {
    let mut key = CacheKey::default();
    key.add("recipe", RECIPE_VERSION).add("profile", profile);
    key.add("hatch-agent", &agent.sha256);
    for source in apt.sources() {
        key.add("source", &source.line());
    }
    for package in packages.all() {
        key.add(&package.name, &package.version);
    }
    key.add("initramfs", &recipe_fingerprint(mode));
    key
}

/// Writes `vmlinux`, `bzImage` and `initramfs.cpio.gz` into `out_dir`;
/// returns the unpacked kernel (in `work`) for further use. `agent` goes
/// into the initramfs (the `minimal` guest runs it from there).
pub async fn build_kernel_and_initramfs(
    apt: &Apt,
    packages: &BasePackages,
    mode: InitMode,
    agent: Option<&GuestAgent>,
    work: &Path,
    out_dir: &Path,
    progress: ProgressFn<'_>,
) -> Result<KernelTree, ImageError> {
    let kernel = prepare_kernel(apt, &packages.kernel, work, out_dir, progress).await?;
    let busybox = prepare_busybox(apt, &packages.busybox, work, progress).await?;
    let ssh = match packages.dropbear.is_empty() {
        true => None,
        false => Some(prepare_dropbear(apt, &packages.dropbear, work, progress).await?),
    };
    progress(ProgressEvent::Step(format!("assembling the initramfs ({mode:?})")));
    let inputs = InitramfsInputs {
        mode,
        busybox: &busybox,
        kernel_root: &kernel.root,
        kernel_version: &kernel.version,
        ssh,
        agent: agent.map(|agent| agent.bytes.as_slice()),
    };
    build_initramfs(&inputs, &work.join("initramfs"), &out_dir.join(INITRAMFS)).await?;
    Ok(kernel)
}

pub async fn build(build: Build<'_>) -> Result<Image, ImageError> {
    let (env, agent, progress) = (build.env, build.agent, build.progress);
    tools::require(&BASE_TOOLS)?;
    let (apt, packages) = with_fresh_lists(env, progress, async |apt| resolve_base_packages(apt, true).await).await?;
    let key = base_key("minimal", &apt, &packages, InitMode::Minimal, agent);
    let (entry, _entry_lock) = get_or_build(&env.cache_dir, "minimal", &key, progress, |out| async move {
        let work = StagingDir::beside(&env.cache_dir.join("work").join("minimal"))?;
        build_kernel_and_initramfs(
            &apt,
            &packages,
            InitMode::Minimal,
            Some(agent),
            work.path(),
            &out,
            progress,
        )
        .await?;
        Ok(())
    })
    .await?;
    let id = new_image_id();
    let dir = install_from_cache(&entry, &env.images_dir, &id, &[VMLINUX, BZIMAGE, INITRAMFS])?;
    Ok(image_from_dir(&dir, id, build.name, ImageProfile::Minimal, "root", ""))
}
