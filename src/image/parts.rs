//! Build steps shared by the `minimal` and `debian` profiles: the Debian
//! cloud kernel (bzImage + extracted ELF vmlinux + modules), static busybox,
//! and dropbear with its libraries.
use std::path::{Path, PathBuf};

use super::apt::{Apt, PackageInfo};
use super::modules::run_depmod;
use super::unpack::{resolve_in_root, runtime_deps, unpack_deb, RuntimeDeps};
use super::vmlinux::extract_vmlinux;
use super::{ImageError, ProgressEvent, ProgressFn};

/// File names inside an image directory (and a cache entry).
pub const VMLINUX: &str = "vmlinux";
pub const BZIMAGE: &str = "bzImage";
pub const INITRAMFS: &str = "initramfs.cpio.gz";
pub const ROOTFS: &str = "rootfs.ext4";

/// The packages a minimal initramfs is made from, resolved to versions.
#[derive(Debug, Clone)]
pub struct BasePackages {
    pub kernel: PackageInfo,
    pub busybox: PackageInfo,
    /// dropbear-bin first, then the library packages it depends on
    /// (empty when the initramfs has no SSH server).
    pub dropbear: Vec<PackageInfo>,
}

impl BasePackages {
    pub fn all(&self) -> impl Iterator<Item = &PackageInfo> {
        [&self.kernel, &self.busybox].into_iter().chain(self.dropbear.iter())
    }
}

/// Library packages are followed through Depends; anything else (e.g.
/// `gcc-12-base`, data-only) cannot provide a shared object dropbear needs.
fn is_library_package(name: &str) -> bool {
    name.starts_with("lib") || name.starts_with("zlib")
}

/// `first` plus the library packages reachable from it through Depends,
/// one apt-cache call per level.
async fn with_library_deps(apt: &Apt, first: PackageInfo) -> Result<Vec<PackageInfo>, ImageError> {
    let mut resolved = vec![first];
    let mut level_start = 0;
    while level_start < resolved.len() {
        let mut wanted: Vec<String> = resolved[level_start..]
            .iter()
            .flat_map(|p| p.depends.iter())
            .filter(|d| is_library_package(d) && !resolved.iter().any(|p| &p.name == *d))
            .cloned()
            .collect();
        wanted.sort();
        wanted.dedup();
        level_start = resolved.len();
        if !wanted.is_empty() {
            let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
            resolved.extend(apt.show(&names).await?);
        }
    }
    Ok(resolved)
}

/// Resolves the kernel, busybox and (with `ssh`) dropbear packages.
pub async fn resolve_base_packages(apt: &Apt, ssh: bool) -> Result<BasePackages, ImageError> {
    let mut first = apt
        .show(&["linux-image-cloud-amd64", "busybox-static", "dropbear-bin"])
        .await?
        .into_iter();
    let (Some(kernel_meta), Some(busybox), Some(dropbear)) = (first.next(), first.next(), first.next()) else {
        return Err(ImageError::Mirror("package lookup returned too few packages".into()));
    };
    Ok(BasePackages {
        kernel: apt.kernel_behind(&kernel_meta).await?,
        busybox,
        dropbear: if ssh {
            with_library_deps(apt, dropbear).await?
        } else {
            Vec::new()
        },
    })
}

/// An unpacked kernel package with modules.dep written.
pub struct KernelTree {
    pub root: PathBuf,
    pub version: String,
}

/// Downloads and unpacks the kernel, indexes its modules and writes
/// `bzImage` and the extracted `vmlinux` into `out_dir`.
pub async fn prepare_kernel(
    apt: &Apt,
    kernel: &PackageInfo,
    work: &Path,
    out_dir: &Path,
    progress: ProgressFn<'_>,
) -> Result<KernelTree, ImageError> {
    let deb = apt.download(kernel, progress).await?;
    progress(ProgressEvent::Step(format!(
        "unpacking {} {}",
        kernel.name, kernel.version
    )));
    let root = work.join("kernel");
    unpack_deb(&deb, &root).await?;
    let modules_dir = root.join("lib/modules");
    let version = std::fs::read_dir(&modules_dir)
        .map_err(|e| ImageError::io("listing", &modules_dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| ImageError::Build(format!("{} ships no modules", kernel.name)))?;
    run_depmod(&root, &version).await?;
    let bzimage = root.join("boot").join(format!("vmlinuz-{version}"));
    std::fs::copy(&bzimage, out_dir.join(BZIMAGE)).map_err(|e| ImageError::io("copying", &bzimage, e))?;
    progress(ProgressEvent::Step(
        "extracting the ELF vmlinux from the bzImage".into(),
    ));
    let (src, dest) = (bzimage.clone(), out_dir.join(VMLINUX));
    tokio::task::spawn_blocking(move || extract_vmlinux(&src, &dest))
        .await
        .map_err(|e| ImageError::Build(format!("extraction task failed: {e}")))??;
    Ok(KernelTree { root, version })
}

/// Downloads and unpacks busybox-static; returns the binary.
pub async fn prepare_busybox(
    apt: &Apt,
    busybox: &PackageInfo,
    work: &Path,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, ImageError> {
    let root = work.join("busybox");
    unpack_deb(&apt.download(busybox, progress).await?, &root).await?;
    resolve_in_root(&root, Path::new("/bin/busybox"))
        .ok_or_else(|| ImageError::Build("busybox-static ships no /bin/busybox".into()))
}

/// Downloads and unpacks dropbear-bin and its libraries; returns the
/// programs to install and what they need at run time.
pub async fn prepare_dropbear(
    apt: &Apt,
    packages: &[PackageInfo],
    work: &Path,
    progress: ProgressFn<'_>,
) -> Result<(Vec<PathBuf>, RuntimeDeps), ImageError> {
    let mut roots = Vec::new();
    for package in packages {
        let root = work.join("debs").join(&package.name);
        unpack_deb(&apt.download(package, progress).await?, &root).await?;
        roots.push(root);
    }
    let programs: Vec<PathBuf> = ["/usr/sbin/dropbear", "/usr/bin/dropbearkey"]
        .iter()
        .map(|p| {
            resolve_in_root(&roots[0], Path::new(p))
                .ok_or_else(|| ImageError::Build(format!("dropbear-bin ships no {p}")))
        })
        .collect::<Result<_, _>>()?;
    let deps = runtime_deps(&programs, &roots)?;
    Ok((programs, deps))
}
