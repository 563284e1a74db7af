use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// How an image was made. `Registered` images were brought by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageProfile {
    Debian,
    Minimal,
    Registered,
}

impl ImageProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageProfile::Debian => "debian",
            ImageProfile::Minimal => "minimal",
            ImageProfile::Registered => "registered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "debian" => Some(ImageProfile::Debian),
            "minimal" => Some(ImageProfile::Minimal),
            "registered" => Some(ImageProfile::Registered),
            _ => None,
        }
    }
}

/// The on-disk format of a kernel file. Firecracker on x86_64 boots only ELF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFormat {
    Elf,
    Bzimage,
}

/// A bootable guest: kernel(s), initrd and (optionally) a root filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub profile: ImageProfile,
    /// ELF vmlinux, bootable by Firecracker and QEMU (PVH).
    pub kernel_path: Option<PathBuf>,
    /// bzImage, bootable by QEMU.
    pub bzimage_path: Option<PathBuf>,
    pub initrd_path: Option<PathBuf>,
    /// Read-only base root filesystem; each VM gets its own writable copy.
    pub rootfs_path: Option<PathBuf>,
    /// The user a person logs in as over SSH (`debian` or `root`).
    pub login_user: String,
    /// Extra kernel command line the image needs (validated when registered).
    pub boot_args: String,
    pub size_bytes: u64,
    pub created_at: Timestamp,
}
