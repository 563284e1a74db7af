//! The guest agent's transport on Firecracker: its vsock device.
//!
//! Firecracker has no host vsock of its own; its device is backed by a
//! Unix-socket multiplexer. A guest connecting to CID 2, port
//! [`VSOCK_PORT`] is forwarded to the host socket `<uds_path>_1024`, on which
//! the daemon listens ([`crate::vmm::AgentEndpoint::Listen`]);
//! `<uds_path>` itself is Firecracker's socket for host-initiated
//! connections, which Hatch does not use.
//!
//! A jailed Firecracker names `uds_path` inside its chroot (`/vsock.sock`),
//! so its `_1024` socket is in the jail's root on the host. The daemon
//! (root) binds it there after each launch or restore (a launch builds the
//! jail afresh) and lets anyone connect (`agent::link`): the jailed VMM
//! runs as the VMM user, and the directories above keep others out.
//!
//! Snapshots keep the device with the same `uds_path`, and a restore into
//! the same run directory (or a fresh jail) rebinds it there, so Hatch
//! removes a stale `vsock.sock` first: Firecracker refuses to bind over an
//! existing file. Firecracker resets the guest's vsock connections on
//! restore; the agent connects again. (Before 1.16.1 a restore could leave
//! the guest's vsock silent for good; `hatch doctor` flags such versions.)
//!
//! The restore names no `vsock_override`: Hatch restores a VM into its own
//! run directory, so the saved path is right, and Firecracker 1.16.1 refuses
//! an override for a snapshot without a vsock device (one taken before
//! Hatch added it), which still restores, without an agent.

use std::path::{Path, PathBuf};

use hatch_agent_proto::VSOCK_PORT;

/// Firecracker's multiplexer socket (`uds_path`), in the run directory or
/// the jail's root.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The guest's context id: each VM has its own device and host socket, so
/// every guest can have the first id a guest may use.
pub const GUEST_CID: u32 = 3;
/// The transport's name for people.
pub const AGENT_TRANSPORT: &str = "vsock";

/// The socket on which guest connections to the agent port arrive, given
/// the host path of `uds_path`.
pub fn listen_path(host_uds: &Path) -> PathBuf {
    let mut name = host_uds.as_os_str().to_owned();
    name.push(format!("_{VSOCK_PORT}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_port_is_a_suffix_of_the_uds_path() {
        assert_eq!(
            listen_path(Path::new("/run/hatch/vms/vm-a/vsock.sock")),
            PathBuf::from("/run/hatch/vms/vm-a/vsock.sock_1024")
        );
    }
}
