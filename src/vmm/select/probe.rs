//! What `choose` and `hatch doctor` look at on the host: the two binaries
//! (path and version), /dev/kvm and the KVM modules, the tun device and the
//! TSC frequency.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{DoctorCheck, HypervisorSettings};
use crate::vmm::host::{self, HostFacts};

/// How long `<binary> --version` may take before it is given up on.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// One VMM binary: where it was found, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryProbe {
    /// The program name looked up on PATH.
    pub name: &'static str,
    /// The short name used in checks ("qemu", "firecracker").
    pub label: &'static str,
    pub path: Option<PathBuf>,
    /// Why it is missing, naming the setting to change.
    pub missing: String,
    pub version: Option<String>,
}

impl BinaryProbe {
    fn find(label: &'static str, name: &'static str, configured: Option<&Path>, env: &str, install_hint: &str) -> Self {
        let (path, missing) = match configured {
            Some(path) if path.is_file() => (Some(path.to_path_buf()), String::new()),
            Some(path) => (None, format!("{env}={} is not a file", path.display())),
            None => match crate::sys::cmd::find_on_path(name) {
                Some(path) => (Some(path), String::new()),
                None => (None, format!("{name} is not on PATH ({install_hint} or set {env})")),
            },
        };
        let version = path.as_deref().and_then(version_of);
        BinaryProbe {
            name,
            label,
            path,
            missing,
            version,
        }
    }

    fn check(&self) -> DoctorCheck {
        let detail = match (&self.path, &self.version) {
            (Some(path), Some(version)) => format!("{} ({version})", path.display()),
            (Some(path), None) => format!("{} (its --version gave no answer)", path.display()),
            (None, _) => self.missing.clone(),
        };
        DoctorCheck {
            name: format!("{} binary", self.label),
            ok: self.path.is_some(),
            detail,
        }
    }
}

/// The first line `<binary> --version` prints, waited for at most a few seconds.
fn version_of(binary: &Path) -> Option<String> {
    let mut child = crate::sys::cmd::std_command(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

/// Everything the choice depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    pub facts: HostFacts,
    pub firecracker: BinaryProbe,
    pub qemu: BinaryProbe,
    pub tsc_khz: Option<u64>,
}

impl HostProbe {
    pub fn detect(settings: &HypervisorSettings) -> Self {
        HostProbe {
            facts: HostFacts::probe(),
            firecracker: BinaryProbe::find(
                "firecracker",
                "firecracker",
                settings.firecracker_bin.as_deref(),
                "HATCH_FIRECRACKER_BIN",
                "install a Firecracker release",
            ),
            qemu: BinaryProbe::find(
                "qemu",
                "qemu-system-x86_64",
                settings.qemu_bin.as_deref(),
                "HATCH_QEMU_BIN",
                "install the qemu-system-x86 package",
            ),
            tsc_khz: host::tsc_khz(),
        }
    }

    /// One check per prerequisite, whatever the choice will be.
    pub fn checks(&self) -> Vec<DoctorCheck> {
        let f = &self.facts;
        let check = |name: &str, ok: bool, detail: String| DoctorCheck {
            name: name.to_string(),
            ok,
            detail,
        };
        let hardware_module = [("kvm_intel", f.kvm_intel), ("kvm_amd", f.kvm_amd)]
            .into_iter()
            .find(|(_, loaded)| *loaded)
            .map(|(name, _)| name);
        vec![
            self.firecracker.check(),
            self.qemu.check(),
            check(
                "/dev/kvm",
                f.dev_kvm_usable,
                if f.dev_kvm_usable {
                    "opens read-write".into()
                } else {
                    "missing or not openable read-write".into()
                },
            ),
            check(
                "hardware KVM",
                hardware_module.is_some(),
                match hardware_module {
                    Some(module) => format!("{module} is loaded"),
                    None => "neither kvm_intel nor kvm_amd is loaded: no hardware virtualisation".into(),
                },
            ),
            // Informational: PVM is not an error, but it changes the choice.
            check(
                "nested PVM KVM",
                true,
                if f.kvm_pvm {
                    "kvm_pvm is loaded: /dev/kvm is the nested PVM module, which runs only PVM-aware guest \
                     kernels and cannot run stock ones, so automatic selection uses QEMU with TCG"
                        .into()
                } else {
                    "kvm_pvm is not loaded".into()
                },
            ),
            check(
                "tun device",
                f.tun_present,
                if f.tun_present {
                    "/dev/net/tun is present".into()
                } else {
                    "/dev/net/tun is missing: guests cannot have TAP networking (modprobe tun)".into()
                },
            ),
            check(
                "TSC frequency",
                self.tsc_khz.is_some(),
                match self.tsc_khz {
                    Some(khz) => format!("{khz} kHz (from /proc/cpuinfo), given to TCG guests as tsc_early_khz"),
                    None => "unknown (no cpu MHz in /proc/cpuinfo): TCG guests may hang while booting".into(),
                },
            ),
        ]
    }
}
