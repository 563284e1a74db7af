//! Assembling initramfs trees: busybox (static), optionally dropbear with
//! the shared libraries it needs and hatch-agent, selected kernel modules
//! and Hatch's /init script, packed into a gzip'd cpio archive.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::agent::{MINIMAL_GUEST_PATH, TRANSPORT_MODULES};
use super::cpio::write_initramfs;
use super::fsutil::create_dir_all;
use super::modules::stage_modules;
use super::tools::run_program;
use super::unpack::RuntimeDeps;
use super::ImageError;

pub const COMMON_SH: &str = include_str!("assets/common.sh");
pub const INIT_MINIMAL: &str = include_str!("assets/init-minimal.sh");
pub const INIT_SWITCHROOT: &str = include_str!("assets/init-switchroot.sh");
pub const UDHCPC_SCRIPT: &str = include_str!("assets/udhcpc.script");

/// Filesystem label of the `debian` image's root filesystem.
pub const ROOT_LABEL: &str = "hatch-root";

/// What the initramfs is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// The whole `minimal` guest: network, seed, dropbear.
    Minimal,
    /// Load disk drivers and switch to the root filesystem by label.
    SwitchRoot,
}

impl InitMode {
    fn script(self) -> &'static str {
        match self {
            InitMode::Minimal => INIT_MINIMAL,
            InitMode::SwitchRoot => INIT_SWITCHROOT,
        }
    }

    /// Modules /init loads (their dependencies come along); the minimal
    /// guest's include hatch-agent's transports.
    pub fn modules(self) -> Vec<&'static str> {
        match self {
            InitMode::Minimal => [
                "virtio_mmio",
                "virtio_blk",
                "virtio_net",
                "vfat",
                "nls_cp437",
                "nls_ascii",
                "nls_iso8859-1",
                "nls_utf8",
                "evdev",
                "button",
            ]
            .into_iter()
            .chain(TRANSPORT_MODULES)
            .collect(),
            InitMode::SwitchRoot => vec!["virtio_mmio", "virtio_blk"],
        }
    }
}

/// Everything an initramfs is made from.
pub struct InitramfsInputs<'a> {
    pub mode: InitMode,
    /// The static busybox binary.
    pub busybox: &'a Path,
    /// An unpacked kernel package (with modules.dep) and its version.
    pub kernel_root: &'a Path,
    pub kernel_version: &'a str,
    /// dropbear and dropbearkey, and what they need (Minimal only).
    pub ssh: Option<(Vec<PathBuf>, RuntimeDeps)>,
    /// The static hatch-agent program (Minimal only: /init starts it).
    pub agent: Option<&'a [u8]>,
}

fn write_file(root: &Path, guest_path: &str, mode: u32, contents: &[u8]) -> Result<(), ImageError> {
    let path = root.join(guest_path.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    std::fs::write(&path, contents)
        .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| ImageError::io("writing", &path, e))
}

fn copy_file(root: &Path, guest_path: &str, source: &Path) -> Result<(), ImageError> {
    let data = std::fs::read(source).map_err(|e| ImageError::io("reading", source, e))?;
    write_file(root, guest_path, 0o755, &data)
}

fn symlink(root: &Path, guest_path: &str, target: &str) -> Result<(), ImageError> {
    let path = root.join(guest_path.trim_start_matches('/'));
    std::os::unix::fs::symlink(target, &path).map_err(|e| ImageError::io("creating symlink", &path, e))
}

/// A merged-/usr layout: every program lives in /bin, the other bin
/// directories point there, so any PATH finds busybox applets and dropbear.
fn base_layout(root: &Path) -> Result<(), ImageError> {
    for dir in [
        "bin", "dev", "etc", "lib", "lib64", "proc", "root", "run", "sys", "tmp", "usr", "var/log", "newroot",
    ] {
        create_dir_all(&root.join(dir))?;
    }
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| ImageError::io("chmod", &root.join("root"), e))?;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| ImageError::io("chmod", &root.join("tmp"), e))?;
    symlink(root, "/sbin", "bin")?;
    symlink(root, "/usr/bin", "../bin")?;
    symlink(root, "/usr/sbin", "../bin")
}

async fn install_busybox(root: &Path, busybox: &Path) -> Result<(), ImageError> {
    copy_file(root, "/bin/busybox", busybox)?;
    let list = run_program(busybox, ["--list"], None)
        .await
        .map_err(|e| ImageError::command(e, root))?;
    for applet in String::from_utf8_lossy(&list).lines().map(str::trim) {
        let valid = !applet.is_empty() && applet != "busybox" && !applet.contains('/');
        if valid && !root.join("bin").join(applet).exists() {
            symlink(root, &format!("/bin/{applet}"), "busybox")?;
        }
    }
    Ok(())
}

fn install_ssh(root: &Path, programs: &[PathBuf], deps: &RuntimeDeps) -> Result<(), ImageError> {
    for program in programs {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        copy_file(root, &format!("/bin/{name}"), program)?;
    }
    if let Some((guest_path, file)) = &deps.interpreter {
        copy_file(root, guest_path, file)?;
    }
    for (soname, file) in &deps.libraries {
        copy_file(root, &format!("/lib/x86_64-linux-gnu/{soname}"), file)?;
    }
    // dropbear looks root up through NSS (files only) and checks the shell;
    // `nobody` is there to run commands without privileges (exec's `user`).
    write_file(
        root,
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )?;
    write_file(root, "/etc/group", 0o644, b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")?;
    // `*`: no password can match, public keys still work.
    write_file(root, "/etc/shadow", 0o600, b"root:*:19000:0:99999:7:::\n")?;
    write_file(root, "/etc/shells", 0o644, b"/bin/sh\n/bin/ash\n")?;
    write_file(
        root,
        "/etc/nsswitch.conf",
        0o644,
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    )?;
    write_file(
        root,
        "/etc/profile",
        0o644,
        b"export PATH=/bin\nexport PS1='\\h:\\w\\$ '\n",
    )?;
    create_dir_all(&root.join("etc/dropbear"))
}

/// Builds the tree in `tree` (an empty scratch directory) and packs it
/// into `out`.
pub async fn build_initramfs(inputs: &InitramfsInputs<'_>, tree: &Path, out: &Path) -> Result<(), ImageError> {
    base_layout(tree)?;
    install_busybox(tree, inputs.busybox).await?;
    if let Some((programs, deps)) = &inputs.ssh {
        install_ssh(tree, programs, deps)?;
    }
    if let Some(agent) = inputs.agent {
        write_file(tree, MINIMAL_GUEST_PATH, 0o755, agent)?;
    }
    write_file(tree, "/init", 0o755, inputs.mode.script().as_bytes())?;
    write_file(tree, "/lib/hatch/common.sh", 0o644, COMMON_SH.as_bytes())?;
    write_file(tree, "/etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes())?;
    write_file(tree, "/etc/hosts", 0o644, b"127.0.0.1 localhost\n")?;
    write_file(
        tree,
        "/etc/hatch/modules",
        0o644,
        (inputs.mode.modules().join(" ") + "\n").as_bytes(),
    )?;
    write_file(
        tree,
        "/etc/hatch/root-label",
        0o644,
        format!("{ROOT_LABEL}\n").as_bytes(),
    )?;
    stage_modules(inputs.kernel_root, inputs.kernel_version, tree, &inputs.mode.modules()).await?;
    let tree = tree.to_path_buf();
    let out = out.to_path_buf();
    tokio::task::spawn_blocking(move || write_initramfs(&tree, &out))
        .await
        .map_err(|e| ImageError::Build(format!("initramfs task failed: {e}")))?
}

/// Text that identifies the initramfs recipe, for the build cache key.
pub fn recipe_fingerprint(mode: InitMode) -> String {
    format!(
        "mode={mode:?}\nmodules={:?}\n{COMMON_SH}\n{}\n{UDHCPC_SCRIPT}\nlabel={ROOT_LABEL}\n",
        mode.modules(),
        mode.script()
    )
}
