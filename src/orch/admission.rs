//! Host admission: a VM is only created, started or restored when the
//! host can hold it. Memory: the VMs that hold guest memory (every state
//! with a VMM process, and `creating`) may commit at most
//! `HATCH_MEM_OVERCOMMIT` × the host's physical memory. Disk: a new VM's
//! disk may grow to its image's full size, which the data directory's
//! free space must hold. vCPUs are not counted: they are threads, and may
//! outnumber the host's CPUs.
//!
//! Callers hold the orchestrator's `allocation` lock, so two admissions
//! never both take the last of the memory.

use std::path::Path;

use crate::model::{Image, VmState};

use super::{OrchError, Orchestrator};

/// Whether a VM in this state holds guest memory on the host.
fn holds_memory(state: VmState) -> bool {
    state == VmState::Creating || state.has_process()
}

impl Orchestrator {
    /// Refuses when `mem_mib` more (for `vm_id`, not counted yet) would
    /// take the committed guest memory past the limit.
    pub(super) async fn admit_memory(&self, vm_id: &str, mem_mib: u32) -> Result<(), OrchError> {
        let Some(host_mib) = crate::vmm::host::memory_mib() else {
            return Ok(());
        };
        let percent = self.config.mem_overcommit_percent;
        let limit = host_mib * u64::from(percent) / 100;
        let committed: u64 = self
            .store
            .run(|store| store.list_vms())
            .await?
            .iter()
            .filter(|vm| vm.id != vm_id && holds_memory(vm.state))
            .map(|vm| u64::from(vm.mem_mib))
            .sum();
        let wanted = committed + u64::from(mem_mib);
        if wanted > limit {
            return Err(OrchError::Insufficient {
                field: "mem_mib",
                message: format!(
                    "not enough host memory: VMs hold {committed} MiB, this one needs {mem_mib} MiB, and the limit \
                     is {limit} MiB (HATCH_MEM_OVERCOMMIT {}.{:02} × {host_mib} MiB of host memory)",
                    percent / 100,
                    percent % 100
                ),
            });
        }
        Ok(())
    }

    /// Refuses when the data directory cannot hold `image`'s disk at its
    /// full size.
    pub(super) fn admit_disk(&self, image: &Image) -> Result<(), OrchError> {
        let Some(rootfs) = &image.rootfs_path else {
            return Ok(());
        };
        let Ok(needed) = std::fs::metadata(rootfs).map(|m| m.len()) else {
            return Ok(()); // Reported as a missing file by the disk copy.
        };
        let free = free_bytes(&self.config.data_dir);
        if needed > free {
            return Err(OrchError::Insufficient {
                field: "image_id",
                message: format!(
                    "not enough disk space: the VM's disk needs up to {} MiB and {} has {} MiB free",
                    needed >> 20,
                    self.config.data_dir.display(),
                    free >> 20
                ),
            });
        }
        Ok(())
    }

    /// Refuses a snapshot, before the guest is paused, when its local copy
    /// might not fit: the saved state is at most the guest's memory plus
    /// its devices' state.
    pub(super) fn admit_hot_copy(&self, vm: &crate::model::Vm) -> Result<(), OrchError> {
        const DEVICE_STATE_MARGIN: u64 = 16 << 20;
        let dir = self.config.data_dir.join("hot");
        std::fs::create_dir_all(&dir).map_err(|e| OrchError::Internal(format!("creating {}: {e}", dir.display())))?;
        let needed = (u64::from(vm.mem_mib) << 20) + DEVICE_STATE_MARGIN;
        let free = free_bytes(&dir);
        if needed > free {
            return Err(OrchError::Exhausted {
                message: format!(
                    "not enough disk space for the snapshot: saving the VM's {} MiB of memory needs up to {} MiB \
                     and {} has {} MiB free",
                    vm.mem_mib,
                    needed >> 20,
                    dir.display(),
                    free >> 20
                ),
            });
        }
        Ok(())
    }
}

/// Space an unprivileged writer could still use on the filesystem of `dir`
/// (all of it when that cannot be read).
fn free_bytes(dir: &Path) -> u64 {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => stat.blocks_available().saturating_mul(stat.fragment_size()),
        Err(_) => u64::MAX,
    }
}
