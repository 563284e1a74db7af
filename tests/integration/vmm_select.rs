//! Backend selection and `hatch doctor` checks against this host's real
//! binaries and devices.

use crate::common;

use std::path::PathBuf;

use hatch::vmm::select::{choose, doctor_checks, HypervisorPreference, HypervisorSettings, QemuAccel};
use hatch::vmm::{HypervisorKind, VmmError};

fn settings(preference: HypervisorPreference, qemu_accel: QemuAccel) -> HypervisorSettings {
    HypervisorSettings {
        preference,
        qemu_accel,
        ..Default::default()
    }
}

#[test]
fn doctor_reports_every_prerequisite_and_the_choice() {
    let checks = doctor_checks(&HypervisorSettings::default());
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "firecracker binary",
        "qemu binary",
        "/dev/kvm",
        "hardware KVM",
        "nested PVM KVM",
        "tun device",
        "TSC frequency",
        "hypervisor",
    ] {
        assert!(names.contains(&expected), "missing check {expected}: {checks:#?}");
    }
    let qemu = checks.iter().find(|c| c.name == "qemu binary").expect("qemu check");
    assert!(qemu.ok && qemu.detail.contains("QEMU emulator version"), "{qemu:?}");
    let choice = checks.iter().find(|c| c.name == "hypervisor").expect("choice");
    assert!(choice.ok, "{choice:?}");
    assert!(
        choice.detail.starts_with("auto") || choice.detail.starts_with("qemu"),
        "{choice:?}"
    );
}

#[test]
fn on_a_host_without_hardware_kvm_auto_means_qemu_tcg() {
    let facts = hatch::vmm::host::HostFacts::probe();
    if facts.kvm_kind() == hatch::vmm::host::KvmKind::Hardware {
        eprintln!("this host has hardware KVM; the TCG fallback is covered by the unit tests");
        return;
    }
    let (backend, checks) = choose(&HypervisorSettings::default()).expect("a backend");
    assert_eq!(backend.kind(), HypervisorKind::Qemu);
    let choice = checks.iter().find(|c| c.name == "hypervisor").expect("choice");
    assert!(choice.detail.contains("tcg"), "{choice:?}");
    if facts.kvm_pvm {
        let pvm = checks.iter().find(|c| c.name == "nested PVM KVM").expect("pvm check");
        assert!(pvm.detail.contains("cannot run stock"), "{pvm:?}");
    }
}

#[test]
fn forcing_firecracker_without_its_binary_is_a_clear_error() {
    let mut forced = settings(HypervisorPreference::Firecracker, QemuAccel::Auto);
    forced.firecracker_bin = Some(PathBuf::from("/nonexistent/firecracker"));
    let err = choose(&forced).err().expect("no binary");
    assert!(matches!(err, VmmError::BinaryMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("HATCH_FIRECRACKER_BIN=/nonexistent/firecracker"),
        "{err}"
    );
}

#[test]
fn forced_choices_are_honoured() {
    let (qemu, _) = choose(&settings(HypervisorPreference::Qemu, QemuAccel::Tcg)).expect("qemu");
    assert_eq!(qemu.kind(), HypervisorKind::Qemu);
    let Some(binary) = common::vmm::firecracker_bin_or_skip("forced_choices_are_honoured (firecracker part)") else {
        return;
    };
    let mut forced = settings(HypervisorPreference::Firecracker, QemuAccel::Auto);
    forced.firecracker_bin = Some(binary);
    let (firecracker, checks) = choose(&forced).expect("firecracker");
    assert_eq!(firecracker.kind(), HypervisorKind::Firecracker);
    let found = checks.iter().find(|c| c.name == "firecracker binary").expect("check");
    assert!(found.ok && found.detail.contains("Firecracker v"), "{found:?}");
}
