//! One cgroup v2 per VMM, with memory, CPU and pid limits.
//!
//! Layout: `<cgroup2 mount>/hatch.slice/<vm id>`, a sibling of systemd's
//! slices (like libvirt's `machine.slice`), so the limits do not depend on
//! where the daemon itself runs and a VMM outlives a daemon restart in it.
//! The VMM joins its cgroup before it executes (the forked child writes 0
//! to `cgroup.procs`), so no thread of it ever runs unlimited.
//!
//! Hosts whose cgroup v2 hierarchy cannot limit memory, CPU and pids (cgroup
//! v1 or hybrid hosts such as a container with only `hugetlb` delegated to
//! the v2 tree) run VMMs without limits; the daemon warns once at start and
//! `hatch doctor` says why.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::model::VmmLimits;

/// The controllers Hatch needs in its subtree.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// Hatch's parent cgroup under the cgroup2 mount.
pub const HATCH_SLICE: &str = "hatch.slice";

/// Whether per-VM limits can be applied on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The parent cgroup (`.../hatch.slice`), with the controllers enabled.
    Available(PathBuf),
    Unavailable(String),
}

/// Detected once per process (creating `hatch.slice` and enabling controllers).
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let support = detect();
        if let Support::Unavailable(why) = &support {
            tracing::warn!("VMM resource limits are off: {why}");
        }
        support
    })
}

/// A line for `hatch doctor`.
pub fn doctor_detail() -> (bool, String) {
    match support() {
        Support::Available(dir) => (true, format!("per-VM limits under {}", dir.display())),
        Support::Unavailable(why) => (false, format!("VMMs run without memory/CPU/pid limits: {why}")),
    }
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

fn detect() -> Support {
    let Some(mount) = cgroup2_mount() else {
        return Support::Unavailable("no cgroup v2 hierarchy is mounted".into());
    };
    let available = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Support::Unavailable(format!(
            "the cgroup v2 hierarchy at {} does not offer the {} controller(s) (it offers: {})",
            mount.display(),
            missing.join(", "),
            if available.trim().is_empty() {
                "none"
            } else {
                available.trim()
            }
        ));
    }
    let slice = mount.join(HATCH_SLICE);
    let enable = CONTROLLERS.map(|c| format!("+{c}")).join(" ");
    let result = std::fs::write(mount.join("cgroup.subtree_control"), &enable)
        .and_then(|_| match std::fs::create_dir(&slice) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        })
        .and_then(|_| std::fs::write(slice.join("cgroup.subtree_control"), &enable));
    match result {
        Ok(()) => Support::Available(slice),
        Err(e) => Support::Unavailable(format!("cannot set up {}: {e}", slice.display())),
    }
}

/// Creates (or reuses) the VM's cgroup with `limits`; `None` when limits are
/// unavailable on this host.
pub fn create(vm_id: &str, limits: &VmmLimits) -> std::io::Result<Option<PathBuf>> {
    let Support::Available(slice) = support() else {
        return Ok(None);
    };
    let dir = slice.join(vm_id);
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    std::fs::write(dir.join("memory.max"), limits.memory_max_bytes.to_string())?;
    // No swapping the guest out behind its back either.
    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    std::fs::write(dir.join("cpu.max"), &limits.cpu_max)?;
    std::fs::write(dir.join("pids.max"), limits.pids_max.to_string())?;
    Ok(Some(dir))
}

/// [`create`] for a launch, as the backends call it.
pub fn for_launch(spec: &super::VmLaunch) -> Result<Option<PathBuf>, super::VmmError> {
    create(&spec.vm_id, &VmmLimits::for_vm(spec.vcpu_count, spec.mem_mib)).map_err(|source| super::VmmError::Io {
        path: PathBuf::from(HATCH_SLICE).join(&spec.vm_id),
        source,
    })
}

/// Removes a VM's cgroup once its VMM is gone (an empty cgroup only).
pub fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(cgroup = %dir.display(), error = %e, "could not remove VM cgroup");
        }
    }
}

/// The cgroup v2 directory a process is in when it is one of Hatch's.
pub fn of_process(pid: u32) -> Option<PathBuf> {
    let Support::Available(slice) = support() else {
        return None;
    };
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let name = rel.strip_prefix(&format!("/{HATCH_SLICE}/"))?;
    Some(slice.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_vm_size() {
        let limits = VmmLimits::for_vm(2, 256);
        assert_eq!(
            limits.memory_max_bytes,
            (256 + crate::model::VMM_MEMORY_OVERHEAD_MIB) << 20
        );
        assert_eq!(limits.cpu_max, "200000 100000");
        assert!(limits.pids_max >= 64);
    }
}
