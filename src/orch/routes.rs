//! Proxy routes of a VM: created and removed under the VM's lock (so a
//! route never appears on a VM being deleted), and the proxy is told.

use std::sync::Arc;

use crate::model::{now, random_id, Route, VmState};

use super::{OrchError, Orchestrator, VmChange};

/// A route as the API validated it; `subdomain: None` asks for one to be
/// generated from the VM id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRoute {
    pub subdomain: Option<String>,
    pub target_port: u16,
    pub auto_wake: bool,
}

impl Orchestrator {
    /// `generated` turns a candidate (the VM id, then the id with a random
    /// suffix) into a valid subdomain, or says why it cannot be one.
    pub async fn create_route(
        self: &Arc<Self>,
        vm_id: &str,
        req: CreateRoute,
        generated: fn(&str) -> Option<String>,
    ) -> Result<Route, OrchError> {
        let vm_id = vm_id.to_string();
        self.run_operation(move |orch| async move {
            let _guard = orch.locks.lock(&vm_id).await;
            let vm = orch.get_vm(&vm_id).await?;
            if vm.state == VmState::Deleting {
                return Err(OrchError::invalid_state(&vm_id, vm.state, "add a route to"));
            }
            if !vm.enable_network {
                return Err(OrchError::InvalidField {
                    field: "vm_id",
                    message: "the VM has no network; a route needs one".into(),
                });
            }
            let subdomain = match req.subdomain {
                Some(subdomain) => subdomain,
                None => orch.free_subdomain(&vm_id, generated).await?,
            };
            let route = Route {
                id: random_id("rt", 10),
                vm_id: vm_id.clone(),
                subdomain,
                target_port: req.target_port,
                auto_wake: req.auto_wake,
                created_at: now(),
                owner_key_id: vm.owner_key_id.clone(),
            };
            let row = route.clone();
            orch.record(move |store, observers| {
                let quotas = store.quotas_of(row.owner_key_id.as_deref())?;
                store.insert_route_within(&row, &quotas)?;
                observers.notify(&VmChange::RoutesChanged { vm_id: &row.vm_id });
                Ok(())
            })
            .await?;
            Ok(route)
        })
        .await
    }

    /// The VM id itself when free (easy to remember), else the id with a suffix.
    async fn free_subdomain(&self, vm_id: &str, generated: fn(&str) -> Option<String>) -> Result<String, OrchError> {
        let base = generated(vm_id).ok_or_else(|| OrchError::InvalidField {
            field: "subdomain",
            message: format!("{vm_id} cannot be a subdomain; give one"),
        })?;
        self.store
            .run(move |store| {
                if store.route_by_subdomain(&base)?.is_none() {
                    return Ok(base);
                }
                for _ in 0..16 {
                    if let Some(candidate) = generated(&random_id(&base, 4)) {
                        if store.route_by_subdomain(&candidate)?.is_none() {
                            return Ok(candidate);
                        }
                    }
                }
                Err(OrchError::Internal("could not generate a free subdomain".into()))
            })
            .await
    }

    /// Gives a VM, its snapshots and routes to another key (see
    /// `Store::set_vm_owner`). False when there is no such VM.
    pub async fn set_vm_owner(&self, vm_id: &str, owner: Option<&str>) -> Result<bool, OrchError> {
        let (vm_id, owner) = (vm_id.to_string(), owner.map(str::to_string));
        self.record(move |store, observers| {
            let changed = store.set_vm_owner(&vm_id, owner.as_deref())?;
            if changed {
                observers.notify(&VmChange::Updated { vm_id: &vm_id });
            }
            Ok(changed)
        })
        .await
    }

    pub async fn list_routes(&self, vm_id: &str) -> Result<Vec<Route>, OrchError> {
        self.get_vm(vm_id).await?;
        let vm_id = vm_id.to_string();
        Ok(self.store.run(move |store| store.list_routes(&vm_id)).await?)
    }

    pub async fn delete_route(self: &Arc<Self>, route_id: &str) -> Result<(), OrchError> {
        let route_id = route_id.to_string();
        self.run_operation(move |orch| async move {
            let not_found = || OrchError::NotFound {
                kind: "route",
                id: route_id.clone(),
            };
            let id = route_id.clone();
            let route = orch
                .store
                .run(move |store| store.get_route(&id))
                .await?
                .ok_or_else(not_found)?;
            let _guard = orch.locks.lock(&route.vm_id).await;
            let deleted = orch.record(move |store, observers| {
                let deleted = store.delete_route(&route.id)?;
                if deleted {
                    observers.notify(&VmChange::RoutesChanged { vm_id: &route.vm_id });
                }
                Ok(deleted)
            });
            if !deleted.await? {
                return Err(not_found());
            }
            Ok(())
        })
        .await
    }
}
