//! The clones themselves: recorded (all or none), restored from the staged
//! state, given their identity, and only then running.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::model::Vm;
use crate::net::NetRequest;
use crate::vmm::VmHandle;

use super::super::create::{DiskOrigin, Plan};
use super::super::ledger::Ledger;
use super::super::operations::Accepted;
use super::super::transitions::Event;
use super::{no_agent, CloneSettings, OrchError, Orchestrator, Staged, IDENTITY_WAIT, RESTORES_AT_ONCE};

impl Orchestrator {
    /// Records `count` clones of the staged VM (all or none), then restores
    /// them; when one fails, all are removed.
    pub(super) async fn clone_staged(
        self: &Arc<Self>,
        staged: &Staged,
        count: u32,
        settings: &CloneSettings,
        mut accepted: Accepted,
    ) -> Result<Vec<Vm>, OrchError> {
        let plan = self.clone_plan(staged, settings);
        let mut recorded = Vec::new();
        for _ in 0..count {
            let vm = async {
                let id = self.new_vm_id().await?;
                self.record_new_vm(&id, &plan).await
            }
            .await;
            match vm {
                Ok(vm) => recorded.push(vm),
                Err(error) => {
                    for vm in recorded {
                        self.release_clone(vm, Ledger::new(), "another clone of the fork failed")
                            .await;
                    }
                    return Err(error);
                }
            }
        }
        if let Some(first) = recorded.first() {
            accepted.send(first);
        }
        let plan = &plan;
        let restored: Vec<(Vm, Result<Ledger, OrchError>)> = futures_util::stream::iter(recorded)
            .map(|vm| async move {
                let outcome = self.bring_up_clone(&vm, staged, plan).await;
                (vm, outcome)
            })
            .buffered(RESTORES_AT_ONCE)
            .collect()
            .await;
        // Every clone stays `creating` until all have taken their identity:
        // a failure, or a crash, until then leaves none of them.
        if restored.iter().any(|(_, outcome)| outcome.is_err()) {
            let mut first_error = None;
            for (vm, outcome) in restored {
                match outcome {
                    Ok(ledger) => self.release_clone(vm, ledger, "another clone of the fork failed").await,
                    Err(error) => first_error = first_error.or(Some(error)),
                }
            }
            return Err(first_error.unwrap_or_else(|| OrchError::Internal("a clone failed".into())));
        }
        let (clones, ledgers): (Vec<Vm>, Vec<Ledger>) = restored
            .into_iter()
            .filter_map(|(vm, outcome)| outcome.ok().map(|ledger| (vm, ledger)))
            .unzip();
        let running = match self.record_clones_running(clones.clone(), &staged.origin).await {
            Ok(running) => running,
            Err(error) => {
                for (vm, ledger) in clones.into_iter().zip(ledgers) {
                    self.release_clone(vm, ledger, &error.to_string()).await;
                }
                return Err(error);
            }
        };
        for ledger in ledgers {
            ledger.commit();
        }
        // Ready once its agent's hello (which applied the identity) has
        // been recorded. From here on the clones exist: an error says so.
        let made: Vec<&str> = running.iter().map(|vm| vm.id.as_str()).collect();
        let made = format!("the fork made {}, but ", made.join(", "));
        let mut ready = Vec::new();
        for vm in &running {
            let vm = self
                .wait_ready(&vm.id, IDENTITY_WAIT)
                .await
                .map_err(|e| e.with_context(&made))?;
            ready.push(self.with_agent(vm));
        }
        Ok(ready)
    }

    /// The clones, all of which took their identity, become `running`
    /// together: a crash before leaves none of them, after it all.
    async fn record_clones_running(&self, clones: Vec<Vm>, origin: &str) -> Result<Vec<Vm>, OrchError> {
        let mut guards = Vec::new();
        for vm in &clones {
            guards.push(self.locks.lock(&vm.id).await);
        }
        let mut current = Vec::new();
        for vm in &clones {
            // The hello may have recorded readiness meanwhile: keep it.
            let mut row = self
                .stored_vm(&vm.id)
                .await?
                .ok_or_else(|| OrchError::vm_not_found(&vm.id))?;
            row.pid = self.handle(&vm.id).map(|handle| handle.pid());
            current.push(row);
        }
        self.apply_together(&mut current, Event::Booted, origin).await?;
        Ok(current)
    }

    /// Ends a clone still `creating`: its VMM, host state and record.
    async fn release_clone(&self, mut vm: Vm, ledger: Ledger, why: &str) {
        let _guard = self.locks.lock(&vm.id).await;
        self.identities.forget(&vm.id);
        self.set_handle(&vm.id, None);
        ledger.rollback().await;
        vm.pid = None;
        if let Err(error) = self
            .apply(&mut vm, Event::BootFailed, Some(format!("clone failed: {why}")))
            .await
        {
            tracing::error!(vm = %vm.id, %error, "removing the record of a failed clone failed");
        }
    }

    /// A clone's settings: its parent's, with what the request chose.
    fn clone_plan(&self, staged: &Staged, settings: &CloneSettings) -> Plan {
        let parent = &staged.parent;
        let egress = settings
            .egress
            .clone()
            .or_else(|| parent.network.as_ref().map(|net| net.egress.clone()))
            .unwrap_or_default();
        Plan {
            image: staged.image.clone(),
            vcpu_count: parent.vcpu_count,
            mem_mib: parent.mem_mib,
            enable_network: parent.enable_network,
            net_request: NetRequest {
                guest_ip: None,
                guest_mac: None,
                egress,
            },
            user_data: parent.user_data.clone(),
            ssh_authorized_keys: parent.ssh_authorized_keys.clone(),
            restart_policy: settings.restart_policy.unwrap_or(parent.restart_policy),
            lifetime: settings
                .lifetime
                .map_or(parent.lifetime, |chosen| chosen.or(parent.lifetime)),
            owner: settings.owner.clone(),
            pool_template_id: None,
        }
    }

    /// Makes one recorded clone's host state, restores the staged state
    /// into it and waits until it has taken its identity; answers what
    /// releases it all. On failure that is released at once.
    async fn bring_up_clone(self: &Arc<Self>, vm: &Vm, staged: &Staged, plan: &Plan) -> Result<Ledger, OrchError> {
        let mut ledger = Ledger::new();
        let restored = {
            let _guard = self.locks.lock(&vm.id).await;
            self.restore_clone(vm, staged, plan, &mut ledger).await
        };
        match restored {
            Ok(()) => Ok(ledger),
            Err(error) => {
                tracing::warn!(vm = %vm.id, %error, "a clone failed; releasing everything it held");
                self.release_clone(vm.clone(), ledger, &error.to_string()).await;
                Err(error)
            }
        }
    }

    async fn restore_clone(
        self: &Arc<Self>,
        vm: &Vm,
        staged: &Staged,
        plan: &Plan,
        ledger: &mut Ledger,
    ) -> Result<(), OrchError> {
        self.prepare_host(vm, plan, DiskOrigin::Saved(staged.disk.as_deref()), ledger)
            .await?;
        let spec = self.launch_spec(vm, &staged.image);
        let handle: Arc<dyn VmHandle> = Arc::from(self.hypervisor.restore(&spec, &staged.files).await?);
        let stopping = handle.clone();
        ledger.record("VMM process", async move {
            stopping.stop(Duration::ZERO).await;
            Ok(())
        });
        let taken = self.identities.register(&vm.id, self.identity_for(vm, &staged.parent));
        let mut running = vm.clone();
        running.pid = Some(handle.pid());
        // Watched while still `creating`: its agent's hello applies the
        // identity; a crash meanwhile rolls the clone back.
        self.watch_process(&running, handle.clone()).await;
        tokio::select! {
            taken = tokio::time::timeout(IDENTITY_WAIT, taken) => match taken {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    return Err(no_agent(&vm.id, &format!("it did not take its new identity: {error}")))
                }
                Ok(Err(_)) | Err(_) => {
                    return Err(no_agent(
                        &vm.id,
                        &format!(
                            "its guest agent did not connect within {} s of the restore",
                            IDENTITY_WAIT.as_secs()
                        ),
                    ))
                }
            },
            exit = handle.wait_exit() => {
                return Err(OrchError::Internal(format!(
                    "the clone's VMM ended before it took its identity (code {:?}, signal {:?}); its console ends with:\n{}",
                    exit.code, exit.signal, exit.serial_tail
                )))
            }
        }
        Ok(())
    }
}
