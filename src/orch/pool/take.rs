//! Taking a VM from a warm pool: it becomes the caller's (quotas checked
//! like a create) in one store update, then is restored.

use std::sync::Arc;

use crate::model::{Vm, VmState};

use super::super::operations::Accepted;
use super::super::{CreateVm, OrchError, Orchestrator, VmChange};

impl Orchestrator {
    /// `POST /vms {"template_id"}` asking for nothing the pool's VMs do
    /// not already have: takes one of the template's pool VMs (the caller
    /// owns it from then on) and restores it. `None` when the pool has
    /// none to give (the create boots a VM instead).
    pub(in crate::orch) async fn take_from_pool(
        self: &Arc<Self>,
        req: &CreateVm,
        accepted: &mut Accepted,
    ) -> Result<Option<Vm>, OrchError> {
        let (Some(template_id), Some(owner)) = (req.pool_template(), req.owner.as_deref()) else {
            return Ok(None);
        };
        let lifetime = req.checked_lifetime()?;
        let restart_policy = req.checked_restart_policy()?.unwrap_or_default();
        let id = template_id.to_string();
        let Some(template) = self.store.run(move |store| store.get_template(&id)).await? else {
            return Ok(None);
        };
        let mut candidates: Vec<Vm> = self
            .view
            .vms(crate::orch::view::Listing::Pool(template_id))
            .into_iter()
            .filter(|vm| vm.state == VmState::Snapshotted)
            .collect();
        // Those whose snapshot is stored first: the others' restore waits for it.
        candidates.sort_by_key(|vm| !self.pool_vm_ready(vm));
        // Pool VMs another take holds are passed over first (that take
        // keeps the lock through its restore); then waited for.
        let tries = candidates
            .iter()
            .map(|vm| (vm, false))
            .chain(candidates.iter().map(|vm| (vm, true)));
        for (candidate, wait) in tries {
            let _guard = match wait {
                true => self.locks.lock(&candidate.id).await,
                false => match self.locks.try_lock(&candidate.id) {
                    Some(guard) => guard,
                    None => continue,
                },
            };
            let Some(mut vm) = self.stored_vm(&candidate.id).await? else {
                continue;
            };
            if vm.pool_template_id.as_deref() != Some(template_id) || vm.state != VmState::Snapshotted {
                continue;
            }
            {
                let _allocating = self.allocation.lock().await;
                self.check_vm_quotas(Some(owner), 1, vm.vcpu_count, vm.mem_mib).await?;
                let now = crate::model::now();
                // Its life as the caller's VM starts now.
                vm.lifetime = lifetime.or(template.lifetime);
                vm.restart_policy = restart_policy;
                vm.created_at = now;
                vm.updated_at = now;
                vm.expires_at = vm.lifetime.expires_at(now);
                let (row, template, owner) = (vm.clone(), template_id.to_string(), owner.to_string());
                let taken = self.record(move |store, observers| {
                    let taken = store.take_pool_vm(&row, &template, &owner)?;
                    if taken {
                        observers.notify(&VmChange::Updated { vm_id: &row.id });
                    }
                    Ok(taken)
                });
                if !taken.await? {
                    continue;
                }
            }
            self.wake_pool_filler();
            tracing::info!(vm = %vm.id, template = %template_id, owner, "taken from the warm pool");
            let pool_snapshot = vm.snapshot_id.clone();
            let restored = self
                .restore_locked(&vm.id, None, std::mem::take(accepted))
                .await
                .map_err(|error| {
                    error.with_context(&format!(
                        "{} was taken from the warm pool and is yours (see GET /vms/{}), but ",
                        vm.id, vm.id
                    ))
                })?;
            self.discard_pool_snapshot(&vm.id, pool_snapshot.as_deref()).await;
            return Ok(Some(restored));
        }
        Ok(None)
    }

    /// The snapshot a pool VM waited in was the pool's, not the caller's:
    /// once the VM runs, it goes (a restore already removed an unstored one).
    async fn discard_pool_snapshot(&self, vm_id: &str, snapshot_id: Option<&str>) {
        let Some(snapshot_id) = snapshot_id else { return };
        let Ok(Some(snapshot)) = self.stored_snapshot(snapshot_id).await else {
            return;
        };
        if let Err(error) = self.discard_snapshot(&snapshot).await {
            tracing::warn!(vm = %vm_id, snapshot = %snapshot_id, %error, "removing the pool's snapshot failed");
        }
    }
}
