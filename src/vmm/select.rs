//! Choosing a backend (`HATCH_HYPERVISOR`, `HATCH_QEMU_ACCEL`) and explaining
//! the choice for `hatch doctor`.

use std::path::PathBuf;

/// `HATCH_HYPERVISOR=auto|firecracker|qemu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HypervisorPreference {
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl HypervisorPreference {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "firecracker" => Some(Self::Firecracker),
            "qemu" => Some(Self::Qemu),
            _ => None,
        }
    }
}

/// `HATCH_QEMU_ACCEL=auto|kvm|tcg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QemuAccel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl QemuAccel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "kvm" => Some(Self::Kvm),
            "tcg" => Some(Self::Tcg),
            _ => None,
        }
    }
}

/// Inputs to the choice, from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HypervisorSettings {
    pub preference: HypervisorPreference,
    pub qemu_accel: QemuAccel,
    /// `HATCH_FIRECRACKER_BIN`; otherwise `firecracker` is looked up on PATH.
    pub firecracker_bin: Option<PathBuf>,
    /// `HATCH_QEMU_BIN`; otherwise `qemu-system-x86_64` on PATH.
    pub qemu_bin: Option<PathBuf>,
}

/// One line of `hatch doctor`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DoctorCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}
