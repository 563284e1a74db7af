//! Facts about the host that decide how guests can run: which kind of KVM
//! is present, the TSC frequency (needed by TCG guests), CPU and memory limits.

use std::path::Path;

/// What `/dev/kvm` is backed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// `kvm_intel` or `kvm_amd`: hardware virtualisation, runs stock kernels.
    Hardware,
    /// The nested PVM module (`kvm_pvm`): runs only PVM-aware guest kernels.
    Pvm,
    /// No usable KVM.
    None,
}

/// A snapshot of the host facts the backends and `hatch doctor` look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub kvm_intel: bool,
    pub kvm_amd: bool,
    pub kvm_pvm: bool,
    /// `/dev/kvm` opens read-write.
    pub dev_kvm_usable: bool,
    /// `/dev/net/tun` exists (TAP devices can be used).
    pub tun_present: bool,
}

impl HostFacts {
    pub fn probe() -> Self {
        HostFacts {
            kvm_intel: module_loaded("kvm_intel"),
            kvm_amd: module_loaded("kvm_amd"),
            kvm_pvm: module_loaded("kvm_pvm"),
            dev_kvm_usable: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            tun_present: Path::new("/dev/net/tun").exists(),
        }
    }

    pub fn kvm_kind(&self) -> KvmKind {
        if !self.dev_kvm_usable {
            KvmKind::None
        } else if self.kvm_intel || self.kvm_amd {
            KvmKind::Hardware
        } else if self.kvm_pvm {
            KvmKind::Pvm
        } else {
            KvmKind::None
        }
    }
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

/// The host TSC frequency in kHz, from the first `cpu MHz` line of
/// /proc/cpuinfo. TCG guests on `microvm` need it (`tsc_early_khz=`): without
/// it they calibrate against emulated timers and often hang before init.
pub fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz_as_khz(&cpuinfo)
}

fn parse_cpu_mhz_as_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let value = line.split_once(':')?.1.trim();
    let mhz: f64 = value.parse().ok()?;
    (mhz.is_finite() && mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// How many vCPUs one guest may have at most: the host's CPU count.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Total host memory in MiB, from /proc/meminfo.
pub fn memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_mhz_becomes_khz() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.412\n";
        assert_eq!(parse_cpu_mhz_as_khz(text), Some(2_445_412));
    }

    #[test]
    fn missing_or_bad_cpu_mhz_is_none() {
        assert_eq!(parse_cpu_mhz_as_khz("model name: x\n"), None);
        assert_eq!(parse_cpu_mhz_as_khz("cpu MHz : fast\n"), None);
        assert_eq!(parse_cpu_mhz_as_khz("cpu MHz : -5\n"), None);
    }

    #[test]
    fn pvm_without_hardware_module_is_pvm() {
        let facts = HostFacts {
            kvm_intel: false,
            kvm_amd: false,
            kvm_pvm: true,
            dev_kvm_usable: true,
            tun_present: true,
        };
        assert_eq!(facts.kvm_kind(), KvmKind::Pvm);
        let hw = HostFacts {
            kvm_amd: true,
            ..facts.clone()
        };
        assert_eq!(hw.kvm_kind(), KvmKind::Hardware);
        let closed = HostFacts {
            dev_kvm_usable: false,
            ..hw
        };
        assert_eq!(closed.kvm_kind(), KvmKind::None);
    }
}
