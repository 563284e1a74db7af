//! `hatch doctor`'s lines on the guest agent's transport: which one each
//! hypervisor found on this host gives its VMs, and why.

use std::path::Path;

use super::probe::HostProbe;
use super::DoctorCheck;
use crate::vmm::{firecracker, qemu};

/// Where a host would have the kernel's vsock backend for QEMU.
const VHOST_VSOCK: &str = "/dev/vhost-vsock";

/// One line per hypervisor binary found (none for a missing one).
pub fn agent_transport_checks(probe: &HostProbe) -> Vec<DoctorCheck> {
    let line = |label: &str, detail: String| DoctorCheck {
        name: format!("{label} agent transport"),
        ok: true,
        detail,
    };
    let mut checks = Vec::new();
    if probe.firecracker.path.is_some() {
        let mut check = line(
            probe.firecracker.label,
            format!(
                "{} (guest CID {}, port {}) through Firecracker's Unix-socket multiplexer: the daemon listens on \
                 <run dir>/{}_{} (in the jail's root when jailed)",
                firecracker::vsock::AGENT_TRANSPORT,
                firecracker::vsock::GUEST_CID,
                hatch_agent_proto::VSOCK_PORT,
                firecracker::vsock::VSOCK_SOCKET,
                hatch_agent_proto::VSOCK_PORT,
            ),
        );
        if let Some(old) = probe.firecracker.version.as_deref().filter(|v| restores_vsock_badly(v)) {
            check.ok = false;
            check.detail.push_str(&format!(
                "; {old} can leave a restored guest's vsock silent (fixed in Firecracker 1.16.1): upgrade it"
            ));
        }
        checks.push(check);
    }
    if probe.qemu.path.is_some() {
        checks.push(line(probe.qemu.label, qemu_detail(Path::new(VHOST_VSOCK).exists())));
    }
    checks
}

/// Firecracker before 1.16.1 did not kick the vsock TX queue on restore,
/// so a guest that was sending when snapshotted could never reach the host
/// again. `version` is `--version`'s first line (`Firecracker v1.16.1`);
/// one that does not parse is given the benefit of the doubt.
fn restores_vsock_badly(version: &str) -> bool {
    let Some(number) = version.split_whitespace().find_map(|w| w.strip_prefix('v')) else {
        return false;
    };
    let parts: Vec<u32> = number.split(['.', '-']).take(3).map_while(|p| p.parse().ok()).collect();
    match parts[..] {
        [major, minor, patch] => (major, minor, patch) < (1, 16, 1),
        _ => false,
    }
}

fn qemu_detail(vhost_vsock: bool) -> String {
    format!(
        "{} port {} served by QEMU on <run dir>/{}, not vsock: {}{}",
        qemu::AGENT_TRANSPORT,
        hatch_agent_proto::SERIAL_PORT_NAME,
        qemu::args::AGENT_SOCKET,
        qemu::AGENT_TRANSPORT_WHY,
        if vhost_vsock {
            " (this host has it, but the port works the same everywhere)"
        } else {
            ", which this host lacks"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_before_1_16_1_is_flagged() {
        assert!(restores_vsock_badly("Firecracker v1.16.0"));
        assert!(restores_vsock_badly("Firecracker v1.9.2"));
        assert!(!restores_vsock_badly("Firecracker v1.16.1"));
        assert!(!restores_vsock_badly("Firecracker v1.17.0-dev"));
        assert!(!restores_vsock_badly("Firecracker v2.0.0"));
        assert!(!restores_vsock_badly("something else"));
    }

    #[test]
    fn qemu_says_why_not_vsock() {
        let detail = qemu_detail(false);
        assert!(detail.starts_with("virtio-serial port org.hatch.agent.0"), "{detail}");
        assert!(
            detail.contains("unmigratable") && detail.ends_with("which this host lacks"),
            "{detail}"
        );
    }
}
