//! The choice itself, a pure function of the settings and the probed host.

use std::path::PathBuf;

use super::probe::{BinaryProbe, HostProbe};
use super::{DoctorCheck, HypervisorPreference, HypervisorSettings, QemuAccel};
use crate::vmm::host::KvmKind;
use crate::vmm::qemu::args::Accel;
use crate::vmm::VmmError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Firecracker { binary: PathBuf },
    Qemu { binary: PathBuf, accel: Accel },
}

/// The outcome and, either way, the reason in words.
#[derive(Debug)]
pub struct Decision {
    pub result: Result<Choice, VmmError>,
    pub reason: String,
}

impl Decision {
    pub fn check(&self) -> DoctorCheck {
        let detail = match &self.result {
            Ok(_) => self.reason.clone(),
            Err(e) => format!("{e} ({})", self.reason),
        };
        DoctorCheck {
            name: "hypervisor".into(),
            ok: self.result.is_ok(),
            detail,
        }
    }
}

fn missing(binary: &BinaryProbe) -> VmmError {
    VmmError::BinaryMissing {
        binary: binary.name.to_string(),
        hint: binary.missing.clone(),
    }
}

pub fn decide(settings: &HypervisorSettings, probe: &HostProbe) -> Decision {
    let kvm = probe.facts.kvm_kind();
    match settings.preference {
        HypervisorPreference::Firecracker => {
            let Some(binary) = probe.firecracker.path.clone() else {
                let reason = "HATCH_HYPERVISOR=firecracker".to_string();
                return Decision {
                    result: Err(missing(&probe.firecracker)),
                    reason,
                };
            };
            let reason = format!("firecracker ({}): HATCH_HYPERVISOR=firecracker", binary.display());
            match kvm {
                KvmKind::None => Decision {
                    result: Err(VmmError::HypervisorUnavailable {
                        hypervisor: "firecracker",
                        reason: "it needs /dev/kvm, which is missing or not usable".into(),
                    }),
                    reason,
                },
                KvmKind::Pvm => Decision {
                    result: Ok(Choice::Firecracker { binary }),
                    reason: format!(
                        "{reason}; warning: /dev/kvm is nested PVM, only PVM-aware guest kernels will boot"
                    ),
                },
                KvmKind::Hardware => Decision {
                    result: Ok(Choice::Firecracker { binary }),
                    reason,
                },
            }
        }
        HypervisorPreference::Qemu => qemu(settings, probe, "HATCH_HYPERVISOR=qemu".into()),
        HypervisorPreference::Auto => match (&probe.firecracker.path, kvm) {
            (Some(binary), KvmKind::Hardware) => Decision {
                result: Ok(Choice::Firecracker { binary: binary.clone() }),
                reason: format!(
                    "auto: firecracker found at {} and hardware KVM is present",
                    binary.display()
                ),
            },
            (None, _) => qemu(
                settings,
                probe,
                format!("auto: no firecracker ({})", probe.firecracker.missing),
            ),
            (Some(_), KvmKind::Pvm) => qemu(
                settings,
                probe,
                "auto: firecracker found, but /dev/kvm is nested PVM, which cannot run stock kernels".into(),
            ),
            (Some(_), KvmKind::None) => qemu(settings, probe, "auto: firecracker found, but no usable KVM".into()),
        },
    }
}

fn qemu(settings: &HypervisorSettings, probe: &HostProbe, why: String) -> Decision {
    let Some(binary) = probe.qemu.path.clone() else {
        return Decision {
            result: Err(missing(&probe.qemu)),
            reason: why,
        };
    };
    let kvm = probe.facts.kvm_kind();
    let tcg = Accel::Tcg { tsc_khz: probe.tsc_khz };
    let (accel, accel_why) = match (settings.qemu_accel, kvm) {
        (QemuAccel::Auto, KvmKind::Hardware) => (Accel::Kvm, "kvm: hardware virtualisation is present"),
        (QemuAccel::Auto, KvmKind::Pvm) => (tcg, "tcg: nested PVM KVM cannot run stock kernels"),
        (QemuAccel::Auto, KvmKind::None) => (tcg, "tcg: no usable KVM"),
        (QemuAccel::Tcg, _) => (tcg, "tcg: HATCH_QEMU_ACCEL=tcg"),
        (QemuAccel::Kvm, KvmKind::Hardware) => (Accel::Kvm, "kvm: HATCH_QEMU_ACCEL=kvm"),
        (QemuAccel::Kvm, KvmKind::Pvm) => (
            Accel::Kvm,
            "kvm: HATCH_QEMU_ACCEL=kvm; warning: nested PVM runs only PVM-aware guest kernels",
        ),
        (QemuAccel::Kvm, KvmKind::None) => {
            return Decision {
                result: Err(VmmError::HypervisorUnavailable {
                    hypervisor: "qemu",
                    reason: "HATCH_QEMU_ACCEL=kvm but /dev/kvm is missing or not usable".into(),
                }),
                reason: why,
            }
        }
    };
    Decision {
        result: Ok(Choice::Qemu {
            binary: binary.clone(),
            accel,
        }),
        reason: format!("qemu ({}) with {accel_why}; {why}", binary.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::host::HostFacts;

    fn binary(name: &'static str, path: Option<&str>) -> BinaryProbe {
        BinaryProbe {
            name,
            label: name,
            path: path.map(PathBuf::from),
            missing: format!("{name} is not on PATH"),
            version: path.map(|_| "v1".into()),
        }
    }

    fn host(kvm: KvmKind, firecracker: Option<&str>, qemu: Option<&str>) -> HostProbe {
        HostProbe {
            facts: HostFacts {
                kvm_intel: kvm == KvmKind::Hardware,
                kvm_amd: false,
                kvm_pvm: kvm == KvmKind::Pvm,
                dev_kvm_usable: kvm != KvmKind::None,
                tun_present: true,
            },
            firecracker: binary("firecracker", firecracker),
            qemu: binary("qemu-system-x86_64", qemu),
            tsc_khz: Some(2_100_000),
        }
    }

    fn settings(preference: HypervisorPreference, qemu_accel: QemuAccel) -> HypervisorSettings {
        HypervisorSettings {
            preference,
            qemu_accel,
            ..Default::default()
        }
    }

    const AUTO: HypervisorPreference = HypervisorPreference::Auto;

    #[test]
    fn auto_prefers_firecracker_only_with_hardware_kvm() {
        let probe = host(KvmKind::Hardware, Some("/bin/fc"), Some("/bin/qemu"));
        let d = decide(&settings(AUTO, QemuAccel::Auto), &probe);
        assert_eq!(
            d.result.expect("choice"),
            Choice::Firecracker {
                binary: "/bin/fc".into()
            }
        );

        let pvm = host(KvmKind::Pvm, Some("/bin/fc"), Some("/bin/qemu"));
        let d = decide(&settings(AUTO, QemuAccel::Auto), &pvm);
        assert!(d.reason.contains("nested PVM"), "{}", d.reason);
        let tcg = Accel::Tcg {
            tsc_khz: Some(2_100_000),
        };
        assert_eq!(
            d.result.expect("choice"),
            Choice::Qemu {
                binary: "/bin/qemu".into(),
                accel: tcg
            }
        );
    }

    #[test]
    fn auto_without_firecracker_uses_qemu_with_kvm_when_hardware() {
        let probe = host(KvmKind::Hardware, None, Some("/bin/qemu"));
        let d = decide(&settings(AUTO, QemuAccel::Auto), &probe);
        assert_eq!(
            d.result.expect("choice"),
            Choice::Qemu {
                binary: "/bin/qemu".into(),
                accel: Accel::Kvm
            }
        );
    }

    #[test]
    fn forcing_a_missing_firecracker_is_a_clear_error() {
        let probe = host(KvmKind::Hardware, None, Some("/bin/qemu"));
        let d = decide(&settings(HypervisorPreference::Firecracker, QemuAccel::Auto), &probe);
        let check = d.check();
        assert!(!check.ok);
        assert!(matches!(d.result, Err(VmmError::BinaryMissing { .. })));
        assert!(check.detail.contains("firecracker not found"), "{}", check.detail);
    }

    #[test]
    fn forcing_kvm_without_kvm_fails_and_tcg_is_always_possible() {
        let probe = host(KvmKind::None, None, Some("/bin/qemu"));
        let kvm = decide(&settings(HypervisorPreference::Qemu, QemuAccel::Kvm), &probe);
        assert!(matches!(kvm.result, Err(VmmError::HypervisorUnavailable { .. })));
        let tcg = decide(&settings(HypervisorPreference::Qemu, QemuAccel::Tcg), &probe);
        assert!(matches!(
            tcg.result,
            Ok(Choice::Qemu {
                accel: Accel::Tcg { .. },
                ..
            })
        ));
    }

    #[test]
    fn no_qemu_and_no_firecracker_is_an_error() {
        let d = decide(&settings(AUTO, QemuAccel::Auto), &host(KvmKind::Pvm, None, None));
        assert!(matches!(d.result, Err(VmmError::BinaryMissing { ref binary, .. }) if binary == "qemu-system-x86_64"));
    }
}
