//! The `debian` profile: Debian bookworm (systemd, openssh-server,
//! cloud-init with NoCloud, hatch-agent) as a labelled ext4 image, the cloud kernel as
//! bzImage and ELF vmlinux, and an initrd that finds the root by label.
use super::byte_progress::watch_dir;
use super::cache::{get_or_build, install_from_cache};
use super::fsutil::{create_dir_all, StagingDir};
use super::initramfs::InitMode;
use super::minimal::{base_key, build_kernel_and_initramfs, with_fresh_lists, BASE_TOOLS};
use super::parts::{resolve_base_packages, BZIMAGE, INITRAMFS, ROOTFS, VMLINUX};
use super::rootfs::{self, ROOTFS_PACKAGES};
use super::tools::{self, MKFS_EXT4, MMDEBSTRAP};
use super::{image_from_dir, new_image_id, Build, ImageError, ProgressEvent};
use crate::model::{Image, ImageProfile};

/// Predictable interface names would rename eth0; Hatch's guests (and
/// the network-config it writes) use eth0.
pub const DEBIAN_BOOT_ARGS: &str = "net.ifnames=0";

pub async fn build(build: Build<'_>) -> Result<Image, ImageError> {
    let (env, agent, progress) = (build.env, build.agent, build.progress);
    tools::require(&BASE_TOOLS)?;
    tools::require(&[MMDEBSTRAP, MKFS_EXT4])?;
    let (apt, (packages, rootfs_packages)) = with_fresh_lists(env, progress, async |apt| {
        Ok((
            resolve_base_packages(apt, false).await?,
            apt.show(&ROOTFS_PACKAGES).await?,
        ))
    })
    .await?;
    let mut key = base_key("debian", &apt, &packages, InitMode::SwitchRoot, agent);
    for package in &rootfs_packages {
        key.add(&package.name, &package.version);
    }
    key.add("rootfs", &rootfs::recipe_fingerprint());

    let (entry, _entry_lock) = get_or_build(&env.cache_dir, "debian", &key, progress, |out| async move {
        let work = StagingDir::beside(&env.cache_dir.join("work").join("debian"))?;
        let kernel =
            build_kernel_and_initramfs(&apt, &packages, InitMode::SwitchRoot, None, work.path(), &out, progress)
                .await?;
        let tree = work.path().join("rootfs");
        create_dir_all(&tree)?;
        let (count, bytes) = apt.closure_download_size(&ROOTFS_PACKAGES).await?;
        progress(ProgressEvent::BulkDownload {
            what: format!("Debian {} root filesystem", super::apt_sources::SUITE),
            packages: count,
            bytes,
        });
        // mmdebstrap downloads into the tree's apt archive directory.
        let archives = tree.join("var/cache/apt/archives");
        watch_dir(&archives, bytes, progress, rootfs::bootstrap(&tree, apt.sources())).await?;
        progress(ProgressEvent::Step(
            "configuring the root filesystem for cloud-init".into(),
        ));
        rootfs::customise(&tree, &kernel.root, &kernel.version, agent).await?;
        progress(ProgressEvent::Step(format!(
            "making the ext4 image ({})",
            rootfs::ROOTFS_SIZE
        )));
        rootfs::make_ext4(&tree, &out.join(ROOTFS)).await
    })
    .await?;
    let id = new_image_id();
    let dir = install_from_cache(&entry, &env.images_dir, &id, &[VMLINUX, BZIMAGE, INITRAMFS, ROOTFS])?;
    Ok(image_from_dir(
        &dir,
        id,
        build.name,
        ImageProfile::Debian,
        "debian",
        DEBIAN_BOOT_ARGS,
    ))
}
