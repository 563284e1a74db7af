//! A clone's own identity. It is registered before the clone's VMM is
//! watched and taken by its agent's first hello, which applies it before
//! anything may report the VM ready: until then the guest still holds its
//! parent's MAC, address and hostname, and the bridge drops its frames.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::RngCore;
use tokio::sync::oneshot;

use crate::agent::proto::{Identity, NicIdentity};
use crate::agent::Conversation;
use crate::model::Vm;

use super::Orchestrator;

/// How many random bytes a clone's entropy pool is given.
const ENTROPY_BYTES: usize = 64;

struct Pending {
    identity: Identity,
    taken: oneshot::Sender<Result<(), String>>,
}

/// Identities waiting for their clone's agent, by VM id.
#[derive(Default)]
pub(super) struct PendingIdentities(Mutex<HashMap<String, Pending>>);

impl PendingIdentities {
    /// Registers the identity `vm_id` must take; the receiver hears whether
    /// it did.
    pub(super) fn register(&self, vm_id: &str, identity: Identity) -> oneshot::Receiver<Result<(), String>> {
        let (taken, receiver) = oneshot::channel();
        self.lock().insert(vm_id.to_string(), Pending { identity, taken });
        receiver
    }

    pub(super) fn forget(&self, vm_id: &str) {
        self.lock().remove(vm_id);
    }

    fn take(&self, vm_id: &str) -> Option<Pending> {
        self.lock().remove(vm_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Orchestrator {
    /// What the clone `vm` of `parent` must become: hostname = its id, its
    /// own MAC and address on the bridge (the parent's MAC finds the NIC),
    /// and entropy of its own.
    pub(super) fn identity_for(&self, vm: &Vm, parent: &Vm) -> Identity {
        let net = self.network.config();
        let nic = vm.network.as_ref().zip(parent.network.as_ref()).map(|(own, from)| NicIdentity {
            previous_mac: from.guest_mac.clone(),
            mac: own.guest_mac.clone(),
            address: format!("{}/{}", own.guest_ip, net.prefix_len),
            gateway: Some(net.gateway.to_string()),
        });
        let mut entropy = vec![0u8; ENTROPY_BYTES];
        rand::thread_rng().fill_bytes(&mut entropy);
        Identity {
            hostname: vm.id.clone(),
            nic,
            entropy,
        }
    }

    /// On an agent's hello: applies the identity waiting for this VM, if
    /// any. Answers a line for the VM's events, or `Err` when the identity
    /// was not taken (the VM must then not be reported ready).
    pub(super) async fn apply_pending_identity(
        &self,
        vm_id: &str,
        conversation: &Arc<Conversation>,
    ) -> Result<Option<String>, ()> {
        let Some(pending) = self.identities.take(vm_id) else {
            return Ok(None);
        };
        let applied = crate::agent::identity::set_identity(conversation, &pending.identity)
            .await
            .map_err(|e| e.to_string());
        let outcome = match &applied {
            Ok(()) => Ok(Some(describe(&pending.identity))),
            Err(error) => {
                tracing::warn!(vm = %vm_id, %error, "the clone did not take its new identity");
                Err(())
            }
        };
        let _ = pending.taken.send(applied);
        outcome
    }
}

fn describe(identity: &Identity) -> String {
    match &identity.nic {
        Some(nic) => format!(
            "took its own identity (hostname {}, MAC {}, address {})",
            identity.hostname, nic.mac, nic.address
        ),
        None => format!("took its own identity (hostname {})", identity.hostname),
    }
}
