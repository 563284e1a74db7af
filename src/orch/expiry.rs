//! Deleting VMs past their TTL (`ttl_seconds`), as `DELETE` does: one
//! operation of the orchestrator's own under the VM's lock, decided again
//! there, with the reason on the VM's `deleting` event.

use std::sync::Arc;

use crate::idle::{decide_expiry, ExpiryDecision, ExpiryInputs, ExpiryOutcome};
use crate::metrics::OperationKind;
use crate::model::{self, Timestamp, Vm};

use super::operations::Accepted;
use super::{OrchError, Orchestrator};

/// What the expiry decision needs of `vm`; `None` without a TTL.
fn expiry_inputs(vm: &Vm, now: Timestamp) -> Option<ExpiryInputs> {
    Some(ExpiryInputs {
        state: vm.state,
        ttl_seconds: vm.lifetime.ttl_seconds?.get(),
        expires_at: vm.lifetime.expires_at(vm.created_at)?,
        now,
    })
}

impl Orchestrator {
    /// Every VM with a TTL, whatever its state.
    pub(super) async fn expiry_candidates(&self) -> Result<Vec<(String, ExpiryInputs)>, OrchError> {
        let now = model::now();
        Ok(self
            .store
            .run(|store| store.list_vms())
            .await?
            .into_iter()
            .filter_map(|vm| expiry_inputs(&vm, now).map(|inputs| (vm.id, inputs)))
            .collect())
    }

    /// Deletes the VM if, decided again under its lock, its TTL has passed.
    /// A failure is recorded as the VM's `error` event, like a failed
    /// `DELETE`, and the next pass tries again.
    pub(super) async fn expire_if_due(self: &Arc<Self>, vm_id: &str) -> Result<ExpiryOutcome, OrchError> {
        let id = vm_id.to_string();
        self.run_vm_operation(Some(id.clone()), move |orch| async move {
            let _guard = orch.locks.lock(&id).await;
            let Some(mut vm) = orch.stored_vm(&id).await? else {
                return Ok(ExpiryOutcome::NotNow {
                    reason: "the VM is gone".into(),
                });
            };
            let Some(inputs) = expiry_inputs(&vm, model::now()) else {
                return Ok(ExpiryOutcome::NotNow {
                    reason: "the VM has no TTL".into(),
                });
            };
            match decide_expiry(&inputs) {
                ExpiryDecision::Wait { reason } => Ok(ExpiryOutcome::NotNow { reason }),
                ExpiryDecision::Delete { reason } => {
                    tracing::info!(vm = %id, %reason, "deleting a VM past its TTL");
                    let delete = orch.delete_locked(&mut vm, reason, Accepted::default());
                    orch.timed(OperationKind::Delete, delete).await?;
                    Ok(ExpiryOutcome::Deleted)
                }
            }
        })
        .await
    }
}
