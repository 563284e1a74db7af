//! The idle monitor's view of VMs: inputs from the store, the proxy's
//! activity and conntrack; suspension (a snapshot or a stop, as the VM's
//! `on_idle` says) re-decides under the VM's lock so that traffic or an
//! SSH login arriving meanwhile wins. TTL expiry is in `expiry.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::idle::{
    decide, ExpiryInputs, ExpiryOutcome, IdleAction, IdleDecision, IdleError, IdleInputs, IdlePolicy, IdleTarget,
    SuspendOutcome,
};
use crate::metrics::{IdleDecisionKind, OperationKind};
use crate::model::{Vm, VmState};
use crate::proxy::ActiveConnections;
use crate::store::StoreError;

use super::Orchestrator;

#[derive(Clone)]
pub struct OrchIdleTarget {
    orch: Arc<Orchestrator>,
    activity: Arc<ActiveConnections>,
    idle_timeout: Duration,
}

impl OrchIdleTarget {
    pub fn new(orch: Arc<Orchestrator>, activity: Arc<ActiveConnections>, idle_timeout: Duration) -> Self {
        Self {
            orch,
            activity,
            idle_timeout,
        }
    }

    /// Stores `decision` and the latest proxied activity on `vm`; the
    /// caller holds the VM's lock.
    /// Records the decision on the VM, and as its `idle` event when the
    /// status text changed (not on every tick that decides the same).
    async fn write_decision(&self, mut vm: Vm, decision: &IdleDecision) -> Result<(), StoreError> {
        let status = status_text(decision);
        let changed = vm.idle_status.as_deref() != Some(status.as_str());
        vm.idle_status = Some(status.clone());
        vm.last_activity_at = self.activity.last_activity(&vm.id).max(vm.last_activity_at);
        let observers = self.orch.observers.clone();
        self.orch
            .store
            .run(move |store| {
                store.update_vm(&vm)?;
                observers.notify(&super::VmChange::Updated { vm_id: &vm.id });
                if changed {
                    store.record_vm_event(&vm.id, crate::store::EventKind::Idle, vm.state, Some(&status))?;
                }
                Ok(())
            })
            .await
    }

    /// Re-decides under the VM's lock and suspends if the VM is still idle.
    async fn suspend_locked(&self, vm_id: &str) -> Result<SuspendOutcome, IdleError> {
        let failed = |message: String| IdleError::SuspendFailed {
            vm_id: vm_id.to_string(),
            message,
        };
        let _guard = self.orch.locks.lock(vm_id).await;
        let vm = self
            .orch
            .stored_vm(vm_id)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed("the VM is gone".into()))?;
        let decision = decide(&self.inputs_for(&vm).await);
        let recorded = self.write_decision(vm, &decision).await;
        match decision {
            IdleDecision::Keep { reason } => {
                self.orch
                    .metrics
                    .count_idle_decision(IdleDecisionKind::KeptAfterRecheck);
                if let Err(error) = recorded {
                    tracing::warn!(vm = %vm_id, %error, "recording the idle decision failed");
                }
                Ok(SuspendOutcome::KeptAfterRecheck { reason })
            }
            IdleDecision::Suspend { action, reason } => {
                // Recorded before the snapshot (or stop) so the VM never
                // reads `snapshotted` with an older decision beside it.
                recorded.map_err(|e| failed(e.to_string()))?;
                tracing::info!(vm = %vm_id, %reason, ?action, "suspending an idle VM");
                let done = match action {
                    IdleAction::Snapshot => {
                        let snapshot = self.orch.snapshot_locked(vm_id, Default::default());
                        self.orch.timed(OperationKind::Snapshot, snapshot).await.map(drop)
                    }
                    IdleAction::Stop => {
                        let vm = self.orch.stored_vm(vm_id).await.map_err(|e| failed(e.to_string()))?;
                        let vm = vm.ok_or_else(|| failed("the VM is gone".into()))?;
                        let stop = self
                            .orch
                            .stop_locked(vm, Some(format!("idle: {reason}")), Default::default());
                        self.orch.timed(OperationKind::Stop, stop).await.map(drop)
                    }
                };
                if let Err(error) = done {
                    self.orch.metrics.count_idle_decision(IdleDecisionKind::SuspendFailed);
                    // A failed snapshot resumes the VM: say so on it rather
                    // than leave "suspended" beside a running VM. A failed
                    // stop leaves whatever state the stop recorded.
                    let reason = match action {
                        IdleAction::Snapshot => format!("suspending failed ({error}); the VM keeps running"),
                        IdleAction::Stop => format!("stopping failed ({error})"),
                    };
                    let kept = IdleDecision::Keep { reason };
                    if let Ok(Some(vm)) = self.orch.stored_vm(vm_id).await {
                        if let Err(store_error) = self.write_decision(vm, &kept).await {
                            tracing::warn!(vm = %vm_id, %store_error, "recording the idle decision failed");
                        }
                    }
                    return Err(failed(error.to_string()));
                }
                self.orch.metrics.count_idle_decision(IdleDecisionKind::Suspend);
                Ok(SuspendOutcome::Suspended)
            }
        }
    }

    async fn inputs_for(&self, vm: &Vm) -> IdleInputs {
        let id = vm.id.clone();
        // Either read failing counts as nothing found (no routes, no start).
        let (routes, transitions) = self
            .orch
            .store
            .run(move |store| {
                Ok::<_, StoreError>((
                    store.list_routes(&id).unwrap_or_default(),
                    store.list_transitions(&id).ok(),
                ))
            })
            .await
            .unwrap_or_default();
        let has_routes = !routes.is_empty();
        // When conntrack cannot be read, assume someone is logged in: never
        // suspend a VM that might be in use.
        let established_ssh = match &vm.network {
            Some(identity) => self
                .orch
                .network
                .established_ssh_sessions(identity)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(vm = %vm.id, %error, "reading SSH sessions failed; keeping the VM");
                    1
                }),
            None => 0,
        };
        // A session seen is activity: idle time counts from when it was
        // last seen open, not from the last proxied request.
        if established_ssh > 0 {
            self.activity.touch(&vm.id);
        }
        let last_activity = self.activity.last_activity(&vm.id).max(vm.last_activity_at);
        let started_at = transitions
            .and_then(|events| {
                events
                    .into_iter()
                    .rev()
                    // A failed snapshot resumes the same guest: not a start,
                    // so its idle time goes on counting.
                    .find(|e| {
                        e.kind == crate::store::EventKind::State
                            && e.to_state == VmState::Running
                            && e.from_state != Some(VmState::Snapshotting)
                    })
                    .map(|e| e.at)
            })
            .unwrap_or(vm.created_at);
        // Nobody could use the guest before it accepted connections: a
        // slow boot does not eat into its idle time.
        let started_at = vm.ready_at.map_or(started_at, |ready| ready.max(started_at));
        // Idle time counts from when the VM became reachable through the
        // proxy, not from a boot that happened before it had any route.
        let started_at = routes
            .iter()
            .map(|route| route.created_at)
            .min()
            .map_or(started_at, |routed| routed.max(started_at));
        IdleInputs {
            state: vm.state,
            has_routes,
            on_idle: vm.lifetime.on_idle,
            vm_idle_timeout: vm.lifetime.idle_timeout_seconds.map(|s| s.duration()),
            last_activity,
            active_streams: self.activity.active_count(&vm.id),
            established_ssh,
            now: crate::model::now(),
            idle_timeout: self.idle_timeout,
            created_or_started_at: started_at,
        }
    }
}

#[async_trait]
impl IdleTarget for OrchIdleTarget {
    /// Running VMs their policy idles (by default, those with routes).
    async fn candidates(&self) -> Vec<String> {
        let idle_timeout = self.idle_timeout;
        let listed = self.orch.store.run(move |store| {
            let vms = store.list_vms()?;
            Ok::<_, StoreError>(
                vms.into_iter()
                    .filter(|vm| vm.state == VmState::Running)
                    .filter(|vm| {
                        let has_routes = store.list_routes(&vm.id).is_ok_and(|routes| !routes.is_empty());
                        let policy = crate::idle::idle_policy(
                            vm.lifetime.on_idle,
                            vm.lifetime.idle_timeout_seconds.map(|s| s.duration()),
                            has_routes,
                            idle_timeout,
                        );
                        matches!(policy, IdlePolicy::Idle { .. })
                    })
                    .map(|vm| vm.id)
                    .collect(),
            )
        });
        listed.await.unwrap_or_default()
    }

    async fn inputs(&self, vm_id: &str) -> Option<IdleInputs> {
        let vm = self.orch.stored_vm(vm_id).await.ok()??;
        Some(self.inputs_for(&vm).await)
    }

    /// Runs as an operation of the orchestrator's own, like a user's
    /// snapshot: nothing cancels it halfway.
    async fn suspend_if_still_idle(&self, vm_id: &str) -> Result<SuspendOutcome, IdleError> {
        let (target, id) = (self.clone(), vm_id.to_string());
        self.orch
            .run_operation(move |_| async move { Ok(target.suspend_locked(&id).await) })
            .await
            .unwrap_or_else(|error| {
                Err(IdleError::SuspendFailed {
                    vm_id: vm_id.to_string(),
                    message: error.to_string(),
                })
            })
    }

    async fn expiry_candidates(&self) -> Vec<(String, ExpiryInputs)> {
        self.orch.expiry_candidates().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "listing VMs with a TTL failed");
            Vec::new()
        })
    }

    async fn expire_if_due(&self, vm_id: &str) -> Result<ExpiryOutcome, IdleError> {
        self.orch
            .expire_if_due(vm_id)
            .await
            .map_err(|error| IdleError::ExpireFailed {
                vm_id: vm_id.to_string(),
                message: error.to_string(),
            })
    }

    fn record_decision(&self, vm_id: &str, decision: &IdleDecision) {
        let target = self.clone();
        let (vm_id, decision) = (vm_id.to_string(), decision.clone());
        tracing::info!(vm = %vm_id, status = %status_text(&decision), "idle check");
        self.orch.metrics.count_idle_decision(IdleDecisionKind::Keep);
        tokio::spawn(async move {
            let _guard = target.orch.locks.lock(&vm_id).await;
            let Ok(Some(vm)) = target.orch.stored_vm(&vm_id).await else {
                return;
            };
            if let Err(error) = target.write_decision(vm, &decision).await {
                tracing::warn!(vm = %vm_id, %error, "recording the idle decision failed");
            }
        });
    }
}

fn status_text(decision: &IdleDecision) -> String {
    match decision {
        IdleDecision::Suspend {
            action: IdleAction::Snapshot,
            reason,
        } => format!("suspended: {reason}"),
        IdleDecision::Suspend {
            action: IdleAction::Stop,
            reason,
        } => format!("stopped: {reason}"),
        IdleDecision::Keep { reason } => format!("kept: {reason}"),
    }
}
