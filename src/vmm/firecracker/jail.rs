//! Running Firecracker under its jailer (`HATCH_JAILER_BIN`).
//!
//! The jailer builds a per-VM chroot (`<base>/firecracker/<vm id>/root`),
//! creates the device nodes Firecracker needs there, moves it into a new
//! mount and PID namespace, applies the cgroup v2 limits (when the host
//! allows them, see `vmm::cgroup`), switches to the VMM user and executes
//! the copy of Firecracker it placed in the chroot. Everything the VM uses
//! (kernel, initrd, disks) is hard-linked (or, for read-only files on
//! another file system, copied) into the chroot by Hatch first, so the
//! jailed process sees only its own VM's files.
//!
//! With `--new-pid-ns` the jailer forks and exits at once, leaving the pid of
//! Firecracker in `<root>/firecracker.pid`; Hatch then supervises that
//! process as it supervises one adopted after a restart (no exit code).

use std::ffi::OsString;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::model::VmmLimits;
use crate::vmm::cgroup::{self, Support, HATCH_SLICE};
use crate::vmm::privilege::VmmUser;
use crate::vmm::{VmLaunch, VmmError};

/// The jailer's settings.
#[derive(Debug, Clone)]
pub struct Jailer {
    pub binary: PathBuf,
    /// `--chroot-base-dir`; per-VM roots are created under it.
    pub chroot_base: PathBuf,
    pub user: VmmUser,
}

/// The API socket and Firecracker's log, as paths inside the chroot.
pub const JAILED_API_SOCKET: &str = "/firecracker.sock";
pub const JAILED_LOG: &str = "/firecracker.log";

fn io(path: &Path) -> impl Fn(std::io::Error) -> VmmError {
    let path = path.to_path_buf();
    move |source| VmmError::Io {
        path: path.clone(),
        source,
    }
}

impl Jailer {
    /// `<base>/<exec file name>/<vm id>`, which the jailer manages.
    pub fn jail_dir(&self, vm_id: &str, firecracker: &Path) -> PathBuf {
        let exec_name = firecracker
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "firecracker".into());
        self.chroot_base.join(exec_name).join(vm_id)
    }

    pub fn root(&self, vm_id: &str, firecracker: &Path) -> PathBuf {
        self.jail_dir(vm_id, firecracker).join("root")
    }

    /// Starts afresh: removes a previous jail of this VM and creates the
    /// root with what Firecracker needs besides what the jailer adds.
    pub fn prepare(&self, vm_id: &str, firecracker: &Path) -> Result<PathBuf, VmmError> {
        let dir = self.jail_dir(vm_id, firecracker);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dir)(e)),
            _ => {}
        }
        let root = dir.join("root");
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        copy_dynamic_libraries(firecracker, &root)?;
        let log = root.join(JAILED_LOG.trim_start_matches('/'));
        std::fs::write(&log, b"").map_err(io(&log))?;
        chown(&log, Some(self.user.uid), Some(self.user.gid)).map_err(io(&log))?;
        Ok(root)
    }

    /// Makes `host` reachable in the chroot as `/<name>` and returns that
    /// path. Writable files must be hard links (the same inode, owned by the
    /// VMM user, mode 0600); read-only files may be copies.
    pub fn place(&self, root: &Path, host: &Path, name: &str, writable: bool) -> Result<PathBuf, VmmError> {
        let inside = root.join(name);
        let _ = std::fs::remove_file(&inside);
        if let Err(e) = std::fs::hard_link(host, &inside) {
            if writable {
                return Err(VmmError::InvalidLaunch(format!(
                    "{} must be on the same file system as the jailer's chroot base {} ({e})",
                    host.display(),
                    self.chroot_base.display()
                )));
            }
            std::fs::copy(host, &inside).map_err(io(&inside))?;
        }
        if writable {
            chown(&inside, Some(self.user.uid), Some(self.user.gid)).map_err(io(&inside))?;
            std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600)).map_err(io(&inside))?;
        }
        Ok(PathBuf::from("/").join(name))
    }

    /// The jailer's command line for `spec`.
    pub fn args(&self, spec: &VmLaunch, firecracker: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--id".into(),
            spec.vm_id.clone().into(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            self.user.uid.to_string().into(),
            "--gid".into(),
            self.user.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--new-pid-ns".into(),
        ];
        if let Support::Available(_) = cgroup::support() {
            let limits = VmmLimits::for_vm(spec.vcpu_count, spec.mem_mib);
            args.extend([
                "--cgroup-version".into(),
                "2".into(),
                "--parent-cgroup".into(),
                HATCH_SLICE.into(),
                "--cgroup".into(),
                format!("memory.max={}", limits.memory_max_bytes).into(),
                "--cgroup".into(),
                format!("cpu.max={}", limits.cpu_max).into(),
                "--cgroup".into(),
                format!("pids.max={}", limits.pids_max).into(),
            ]);
        }
        args.extend([
            "--".into(),
            "--api-sock".into(),
            JAILED_API_SOCKET.into(),
            "--log-path".into(),
            JAILED_LOG.into(),
            "--level".into(),
            "Warning".into(),
        ]);
        args
    }
}

/// The jailer copies only the executable into the chroot. Official
/// Firecracker releases are static; a dynamically linked build (such as a
/// development build for the gnu target) also needs its loader and
/// libraries there, at the same paths (`ldd` names them).
fn copy_dynamic_libraries(firecracker: &Path, root: &Path) -> Result<(), VmmError> {
    let Ok(output) = crate::sys::cmd::std_command("ldd").arg(firecracker).output() else {
        return Ok(());
    };
    if !output.status.success() {
        // "not a dynamic executable"
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let host = Path::new(path);
        let inside = root.join(path.trim_start_matches('/'));
        if let Some(parent) = inside.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(host, &inside).map_err(io(&inside))?;
    }
    Ok(())
}
