//! [`HostNetwork`]: what orchestration needs of host networking, as a trait,
//! so orchestration can be driven (and its failures injected) without root.
//! [`Network`](super::Network) is the real one.

use async_trait::async_trait;

use super::{NetConfig, NetError, NetRequest, ReconcileReport, Taken};
use crate::model::NetworkIdentity;

/// Host networking for VMs: identities, the bridge and its services, and
/// one VM's TAP, reservation and forwards. Implementations serialise their
/// own host changes; callers may call concurrently.
#[async_trait]
pub trait HostNetwork: Send + Sync {
    /// The settings this host network was built with.
    fn config(&self) -> &NetConfig;

    /// Picks or validates a VM's identity against `taken`. No host effect.
    fn allocate(&self, vm_id: &str, req: &NetRequest, taken: &Taken) -> Result<NetworkIdentity, NetError>;

    /// Host-wide state (bridge, firewall, DHCP server). Idempotent.
    async fn ensure_host(&self) -> Result<(), NetError>;

    /// Makes the host match exactly `desired` (every networked VM), repairs
    /// drift, and says what it found.
    async fn reconcile(&self, desired: &[(String, NetworkIdentity)]) -> Result<ReconcileReport, NetError>;

    /// Host state for one VM; returns once the VM may boot.
    async fn attach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError>;

    /// Removes one VM's host state.
    async fn detach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError>;

    /// Stops background work (the DHCP server's supervision).
    async fn shutdown(&self);

    /// SSH connections established to the VM (for the idle monitor).
    async fn established_ssh_sessions(&self, id: &NetworkIdentity) -> Result<usize, NetError>;
}
