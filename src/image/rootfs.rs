//! The `debian` root filesystem: Debian bookworm minbase made by
//! mmdebstrap into a directory, adjusted for cloud-init under Hatch, and
//! turned into a labelled ext4 image with `mkfs.ext4 -d` (no mounting).
use std::path::Path;

use super::agent::{GuestAgent, DEBIAN_GUEST_PATH, MODULES_LOAD_CONF, SYSTEMD_UNIT};
use super::apt_sources::{AptSource, SUITE};
use super::fsutil::create_dir_all;
use super::initramfs::ROOT_LABEL;
use super::tools::{self, CP, MKFS_EXT4, MMDEBSTRAP};
use super::ImageError;

/// Packages on top of minbase (see docs/images.md for why each is there).
pub const ROOTFS_PACKAGES: [&str; 13] = [
    "systemd-sysv",
    "udev",
    "kmod",
    "openssh-server",
    "cloud-init",
    // DHCP is systemd-networkd's (in systemd); it hands the DNS servers it
    // learns to systemd-resolved, which the networking guide configures.
    "systemd-resolved",
    "iproute2",
    "netbase",
    "ca-certificates",
    "sudo",
    // The networking guide's troubleshooting runs these inside the VM.
    "iputils-ping",
    "curl",
    "bind9-dnsutils",
];

/// Size of the (sparse) ext4 image; the tree itself is about 470 MB.
pub const ROOTFS_SIZE: &str = "2048M";

/// Files written into the tree after mmdebstrap: (path, mode, contents).
pub const ROOTFS_FILES: [(&str, u32, &str); 8] = [
    (
        "/etc/fstab",
        0o644,
        "LABEL=hatch-root / ext4 defaults,errors=remount-ro 0 0\n",
    ),
    // cloud-init fails on minbase without a locale setting.
    ("/etc/default/locale", 0o644, "LANG=C.UTF-8\n"),
    (
        "/etc/cloud/cloud.cfg.d/90_hatch.cfg",
        0o644,
        "# Written by Hatch: seeds come from a CIDATA disk (NoCloud).\n\
         datasource_list: [NoCloud, None]\n\
         # RSA/ECDSA key generation is slow under software emulation.\n\
         ssh_genkeytypes: [ed25519]\n\
         # The guide logs in with `ssh root@<host> -p <port>`: root gets the\n\
         # same keys as the default user `debian`.\n\
         disable_root: false\n\
         # Without ifupdown, cloud-init writes systemd-networkd files.\n\
         system_info:\n  network:\n    renderers: [networkd]\n    activators: [networkd]\n",
    ),
    ("/etc/hostname", 0o644, "debian\n"),
    (
        "/etc/hosts",
        0o644,
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    ),
    // Empty: systemd gives every VM its own id at first boot.
    ("/etc/machine-id", 0o444, ""),
    // hatch-agent (the binary is copied to DEBIAN_GUEST_PATH).
    ("/etc/systemd/system/hatch-agent.service", 0o644, SYSTEMD_UNIT),
    ("/etc/modules-load.d/hatch-agent.conf", 0o644, MODULES_LOAD_CONF),
];

/// Symlinks written into the tree: (path, target).
pub const ROOTFS_LINKS: [(&str, &str); 9] = [
    // e2scrub_reap takes ~20 s under TCG and is useless in a VM.
    ("/etc/systemd/system/e2scrub_reap.service", "/dev/null"),
    // Without dbus/logind this starts gettys on tty1-6, which a VM with
    // only a serial console never shows.
    ("/etc/systemd/system/getty-static.service", "/dev/null"),
    (
        "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
        "/lib/systemd/system/serial-getty@.service",
    ),
    // `systemctl enable systemd-networkd` (its [Install] section).
    (
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/lib/systemd/system/systemd-networkd.service",
    ),
    (
        "/etc/systemd/system/dbus-org.freedesktop.network1.service",
        "/lib/systemd/system/systemd-networkd.service",
    ),
    (
        "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
        "/lib/systemd/system/systemd-networkd.socket",
    ),
    (
        "/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service",
        "/lib/systemd/system/systemd-networkd-wait-online.service",
    ),
    // `systemctl enable hatch-agent`.
    (
        "/etc/systemd/system/multi-user.target.wants/hatch-agent.service",
        "/etc/systemd/system/hatch-agent.service",
    ),
    // Programs ask systemd-resolved's stub, which forwards to the DNS
    // servers DHCP gave (or those set in /etc/systemd/resolved.conf.d).
    ("/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
];

/// Text that identifies the rootfs recipe, for the build cache key.
pub fn recipe_fingerprint() -> String {
    format!("{SUITE} minbase {ROOTFS_PACKAGES:?} {ROOTFS_SIZE} {ROOTFS_FILES:?} {ROOTFS_LINKS:?} {ROOT_LABEL}")
}

/// Runs mmdebstrap into the empty directory `tree`.
pub async fn bootstrap(tree: &Path, sources: &[AptSource]) -> Result<(), ImageError> {
    let mut args = vec![
        "--variant=minbase".to_string(),
        "--quiet".to_string(),
        format!("--include={}", ROOTFS_PACKAGES.join(",")),
        "--aptopt=Acquire::Languages \"none\"".to_string(),
        SUITE.to_string(),
        tree.display().to_string(),
    ];
    args.extend(sources.iter().map(AptSource::line));
    tools::run(MMDEBSTRAP, &args, None)
        .await
        .map_err(|e| match ImageError::command(e, tree) {
            ImageError::Command(e) if e.to_string().contains("Failed to fetch") => {
                ImageError::Mirror(format!("mmdebstrap could not download packages: {e}"))
            }
            other => other,
        })?;
    Ok(())
}

fn in_tree(tree: &Path, guest_path: &str) -> std::path::PathBuf {
    tree.join(guest_path.trim_start_matches('/'))
}

/// Writes `contents` at `guest_path` in `tree` with `mode`, replacing
/// whatever is there.
fn write_in_tree(tree: &Path, guest_path: &str, mode: u32, contents: &[u8]) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let path = in_tree(tree, guest_path);
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, contents)
        .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| ImageError::io("writing", &path, e))
}

/// Applies Hatch's adjustments and installs the kernel's modules and the agent.
pub async fn customise(
    tree: &Path,
    kernel_root: &Path,
    kernel_version: &str,
    agent: &GuestAgent,
) -> Result<(), ImageError> {
    for (guest_path, mode, contents) in ROOTFS_FILES {
        write_in_tree(tree, guest_path, mode, contents.as_bytes())?;
    }
    write_in_tree(tree, DEBIAN_GUEST_PATH, 0o755, &agent.bytes)?;
    for (guest_path, target) in ROOTFS_LINKS {
        let path = in_tree(tree, guest_path);
        if let Some(parent) = path.parent() {
            create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path).map_err(|e| ImageError::io("creating symlink", &path, e))?;
    }
    // Host keys made while installing openssh-server would be shared by
    // every VM; cloud-init generates each VM's own at first boot.
    let ssh_dir = in_tree(tree, "/etc/ssh");
    for entry in std::fs::read_dir(&ssh_dir)
        .map_err(|e| ImageError::io("listing", &ssh_dir, e))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path()).map_err(|e| ImageError::io("removing", &entry.path(), e))?;
        }
    }
    // The whole module tree: udev loads virtio_net, vfat, nls... on demand.
    let modules = in_tree(tree, "/lib/modules");
    create_dir_all(&modules)?;
    let source = kernel_root.join("lib/modules").join(kernel_version);
    tools::run(CP, ["-a".as_ref(), source.as_os_str(), modules.as_os_str()], None)
        .await
        .map_err(|e| ImageError::command(e, &modules))?;
    Ok(())
}

/// `mkfs.ext4 -L hatch-root -d TREE IMAGE SIZE`.
pub async fn make_ext4(tree: &Path, image: &Path) -> Result<(), ImageError> {
    let args = [
        "-q".as_ref(),
        "-L".as_ref(),
        ROOT_LABEL.as_ref(),
        "-d".as_ref(),
        tree.as_os_str(),
        image.as_os_str(),
        ROOTFS_SIZE.as_ref(),
    ];
    tools::run(MKFS_EXT4, args, None)
        .await
        .map_err(|e| ImageError::command(e, image))?;
    Ok(())
}
