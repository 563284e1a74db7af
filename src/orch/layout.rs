//! Where a VM's files live: `$HATCH_DATA_DIR/vms/<id>/`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLayout {
    dir: PathBuf,
}

impl VmLayout {
    pub fn new(data_dir: &Path, vm_id: &str) -> Self {
        Self {
            dir: vms_dir(data_dir).join(vm_id),
        }
    }

    /// Per-VM directory; also the VMM's runtime dir (sockets, serial log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VM's own writable copy of the image's root filesystem.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// The cloud-init NoCloud seed volume.
    pub fn seed(&self) -> PathBuf {
        self.dir.join("seed.img")
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
}

pub fn vms_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vms")
}
