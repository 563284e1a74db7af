//! Warm pools: a template with `warm_pool_size` N keeps N VMs of its own
//! booted to ready and snapshotted (a hot copy on disk, no CPU), so a
//! create from the template takes one and restores it instead of booting.
//!
//! A pool VM is an ordinary VM row, admin-owned (no quota) and marked with
//! `pool_template_id`: never listed by `GET /vms`, counted by no one. The
//! filler makes missing ones through the ordinary create path, waits until
//! each is ready and snapshots it; pool VMs that failed (`error`,
//! `stopped`), lost their snapshot, were left running by a restart, or
//! whose template is gone are finished or removed. Taking one gives it to the caller (quotas
//! checked under the allocation lock, like a create) in one store update,
//! then restores it; the filler is woken to refill.
//!
//! Every step the filler takes is an ordinary operation (create, snapshot,
//! delete), so a crash mid-refill is rolled back or finished by the
//! reconciler like any other, and the next pass counts the pool again.

mod take;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::model::{Template, Vm, VmState};
use crate::store::{EventKind, Store};

use super::operations::Accepted;
use super::{CreateVm, OrchError, Orchestrator};

/// How often the filler looks at the pools when nothing wakes it.
const FILL_INTERVAL: Duration = Duration::from_secs(5);
/// Pool jobs at once: each boots a guest or packs a snapshot, and small
/// hosts have two cores.
const JOBS_AT_ONCE: usize = 2;
/// How long a new pool VM may take to become ready (software-emulated
/// guests on a busy host are slow).
const READY_WAIT: Duration = Duration::from_secs(300);
/// Back-off after a failed fill of a template: doubling from the first
/// delay up to the last.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// `warm_pool` of a template object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub size: u32,
    /// Snapshotted and ready to be taken.
    pub ready: u32,
    /// Being made (booting, being snapshotted or stored).
    pub filling: u32,
}

/// The filler's shared state.
#[derive(Default)]
pub(super) struct Pools {
    wake: tokio::sync::Notify,
    /// Per template: held shared by each fill of its pool, exclusively by
    /// the deletion of the template, which so waits for fills in flight.
    fills: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    retry: Mutex<HashMap<String, Retry>>,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before: Instant,
}

impl Pools {
    fn fill_lock(&self, template_id: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        fills.entry(template_id.to_string()).or_default().clone()
    }

    fn forget(&self, template_id: &str) {
        self.fills.lock().unwrap_or_else(|e| e.into_inner()).remove(template_id);
        self.retry.lock().unwrap_or_else(|e| e.into_inner()).remove(template_id);
    }

    fn backed_off(&self, template_id: &str) -> bool {
        let retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        retry.get(template_id).is_some_and(|r| Instant::now() < r.not_before)
    }

    /// Records the outcome of a fill; answers the delay before the next
    /// try after a failure.
    fn record(&self, template_id: &str, failed: bool) -> Duration {
        let mut retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            retry.remove(template_id);
            return Duration::ZERO;
        }
        let failures = retry.get(template_id).map_or(0, |r| r.failures) + 1;
        let delay = retry_delay(failures);
        retry.insert(
            template_id.to_string(),
            Retry {
                failures,
                not_before: Instant::now() + delay,
            },
        );
        delay
    }
}

fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(8))
        .min(MAX_RETRY)
}

/// One thing a filler pass does.
enum Job {
    /// Make one pool VM for the template.
    Fill(Template),
    /// Snapshot a pool VM that was made but not snapshotted (a restart
    /// cut its fill short), or replace it.
    Finish(Vm),
    /// Remove a pool VM that failed or whose template is gone.
    Remove(Vm, &'static str),
}

impl Orchestrator {
    /// Keeps every warm pool at its size: a pass every few seconds and
    /// right after a take or a template change, until the orchestrator is
    /// gone or shuts down.
    pub fn spawn_pool_filler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let orch = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = orch.upgrade() else { return };
                if strong.operations.is_closing() {
                    return;
                }
                strong.fill_pass().await;
                tokio::select! {
                    _ = tokio::time::sleep(FILL_INTERVAL) => {}
                    _ = strong.pools.wake.notified() => {}
                }
            }
        })
    }

    /// Has the filler look at the pools now (after a take, or a template
    /// made or deleted).
    pub fn wake_pool_filler(&self) {
        self.pools.wake.notify_one();
    }

    /// How full the template's pool is.
    pub fn pool_status(&self, template: &Template) -> PoolStatus {
        let vms = self.view.vms(crate::orch::view::Listing::Pool(&template.id));
        let ready = vms.iter().filter(|vm| self.pool_vm_ready(vm)).count() as u32;
        PoolStatus {
            size: template.warm_pool_size,
            ready,
            filling: vms.len() as u32 - ready,
        }
    }

    /// Snapshotted, and its snapshot no longer being stored (a restore
    /// would wait for that).
    fn pool_vm_ready(&self, vm: &Vm) -> bool {
        vm.state == VmState::Snapshotted
            && vm
                .snapshot_id
                .as_deref()
                .is_some_and(|id| !self.durability.is_running(id))
    }

    async fn fill_pass(self: &Arc<Self>) {
        // Two queries every few seconds: on a blocking thread, never a runtime worker.
        let orch = Arc::clone(self);
        let jobs = self.store.run(move |store| orch.pool_jobs(store)).await;
        let jobs = match jobs {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "reading the warm pools failed; trying again later");
                return;
            }
        };
        futures_util::stream::iter(jobs)
            .for_each_concurrent(JOBS_AT_ONCE, |job| self.run_pool_job(job))
            .await;
    }

    /// What the pools need now. No job of the filler runs meanwhile, so a
    /// pool VM found running is not one being made.
    fn pool_jobs(&self, store: &Store) -> Result<Vec<Job>, OrchError> {
        let templates = store.list_templates()?;
        let mut counted: HashMap<&str, u32> = HashMap::new();
        let mut jobs = Vec::new();
        for vm in store.list_pool_vms()? {
            let template = templates
                .iter()
                .find(|t| vm.pool_template_id.as_deref() == Some(t.id.as_str()));
            let Some(template) = template else {
                jobs.push(Job::Remove(vm, "its template was deleted"));
                continue;
            };
            match vm.state {
                VmState::Error | VmState::Stopped => jobs.push(Job::Remove(vm, "it failed; it is replaced")),
                // Its saved state was lost (a hot copy gone before it was
                // stored): a take could not restore it.
                VmState::Snapshotted if super::snapshot::suspended_with(store, &vm).is_err() => {
                    jobs.push(Job::Remove(vm, "its snapshot is gone; it is replaced"))
                }
                VmState::Running => {
                    *counted.entry(template.id.as_str()).or_default() += 1;
                    jobs.push(Job::Finish(vm));
                }
                _ => *counted.entry(template.id.as_str()).or_default() += 1,
            }
        }
        for template in &templates {
            let have = counted.get(template.id.as_str()).copied().unwrap_or(0);
            if have >= template.warm_pool_size || self.pools.backed_off(&template.id) {
                continue;
            }
            for _ in have..template.warm_pool_size {
                jobs.push(Job::Fill(template.clone()));
            }
        }
        Ok(jobs)
    }

    async fn run_pool_job(self: &Arc<Self>, job: Job) {
        match job {
            Job::Fill(template) => {
                let filled = self.fill_one(&template).await;
                if filled.is_err() {
                    let id = template.id.clone();
                    if let Ok(None) = self.store.run(move |store| store.get_template(&id)).await {
                        return; // Deleted meanwhile: its pool is drained, not refilled.
                    }
                }
                if filled.is_err() && self.operations.is_closing() {
                    return; // Refused by the shutdown; the next start refills.
                }
                let delay = self.pools.record(&template.id, filled.is_err());
                if let Err(error) = filled {
                    let detail = format!(
                        "warm pool of template {}: making a VM failed ({error}); trying again in {} s",
                        template.id,
                        delay.as_secs()
                    );
                    tracing::warn!(template = %template.id, %error, "filling the warm pool failed");
                    let recorded = self
                        .store
                        .run(move |store| store.record_host_event(EventKind::Error, &detail));
                    if let Err(store_error) = recorded.await {
                        tracing::error!(%store_error, "recording the failed fill failed");
                    }
                }
            }
            Job::Finish(vm) => {
                let Some(template_id) = vm.pool_template_id.clone() else {
                    return;
                };
                if let Err(error) = self.finish_pool_vm(&vm.id, &template_id).await {
                    tracing::warn!(vm = %vm.id, %error, "a pool VM left running could not be snapshotted; replacing it");
                    self.remove_pool_vm_logged(&vm.id, &template_id, "it could not be snapshotted")
                        .await;
                }
            }
            Job::Remove(vm, why) => {
                let Some(template_id) = vm.pool_template_id.clone() else {
                    return;
                };
                self.remove_pool_vm_logged(&vm.id, &template_id, why).await;
            }
        }
    }

    /// Makes one pool VM of `template`, ready and snapshotted; on failure
    /// nothing of it stays.
    async fn fill_one(self: &Arc<Self>, template: &Template) -> Result<(), OrchError> {
        let fills = self.pools.fill_lock(&template.id);
        let _filling = fills.read().await;
        let request = CreateVm {
            template_id: Some(template.id.clone()),
            pool_template_id: Some(template.id.clone()),
            ..CreateVm::default()
        };
        let vm = self.create_vm(request).await?;
        tracing::info!(vm = %vm.id, template = %template.id, "a VM was made for the warm pool");
        match self.finish_pool_vm(&vm.id, &template.id).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.remove_pool_vm_logged(&vm.id, &template.id, "its fill failed")
                    .await;
                Err(error)
            }
        }
    }

    /// Waits until the pool VM is ready, snapshots it and waits until its
    /// snapshot is stored (only then is it ready to be taken).
    async fn finish_pool_vm(self: &Arc<Self>, vm_id: &str, template_id: &str) -> Result<(), OrchError> {
        self.wait_ready(vm_id, READY_WAIT).await?;
        let (id, template) = (vm_id.to_string(), template_id.to_string());
        let snapshot = self
            .run_vm_operation(Some(id.clone()), move |orch| async move {
                let _guard = orch.locks.lock(&id).await;
                let vm = orch.get_vm(&id).await?;
                if vm.pool_template_id.as_deref() != Some(template.as_str()) {
                    return Ok(None);
                }
                orch.snapshot_locked(&id, Accepted::default()).await.map(Some)
            })
            .await?;
        if let Some(snapshot) = snapshot {
            self.durability.wait(&snapshot.id, false).await;
            tracing::info!(vm = %vm_id, template = %template_id, "a pool VM is ready to be taken");
        }
        Ok(())
    }

    async fn remove_pool_vm_logged(self: &Arc<Self>, vm_id: &str, template_id: &str, why: &str) {
        if let Err(error) = self.remove_pool_vm(vm_id, template_id, why).await {
            tracing::warn!(vm = %vm_id, %error, "removing a pool VM failed; the filler tries again");
        }
    }

    /// Deletes the VM if it is still in the pool of `template_id` (a take
    /// may have won the race).
    async fn remove_pool_vm(self: &Arc<Self>, vm_id: &str, template_id: &str, why: &str) -> Result<(), OrchError> {
        let (id, template, reason) = (
            vm_id.to_string(),
            template_id.to_string(),
            format!("removed from the warm pool of template {template_id}: {why}"),
        );
        self.run_operation(move |orch| async move {
            let _guard = orch.locks.lock(&id).await;
            let Some(mut vm) = orch.stored_vm(&id).await? else {
                return Ok(());
            };
            if vm.pool_template_id.as_deref() != Some(template.as_str()) {
                return Ok(());
            }
            orch.delete_locked(&mut vm, reason, Accepted::default()).await
        })
        .await
    }

    /// Deletes a template and its warm pool. The row goes first, so no
    /// pool VM is made for it any more; then, once fills in flight have
    /// ended, its pool VMs and their snapshots. Cut short, the filler
    /// removes the pool VMs of a template that is gone.
    pub async fn delete_template(self: &Arc<Self>, id: &str) -> Result<bool, OrchError> {
        let template = id.to_string();
        if !self.store.run(move |store| store.delete_template(&template)).await? {
            return Ok(false);
        }
        let fills = self.pools.fill_lock(id);
        let drained = async {
            let _draining = fills.write().await;
            for vm in self.store.run(|store| store.list_pool_vms()).await? {
                if vm.pool_template_id.as_deref() == Some(id) {
                    self.remove_pool_vm(&vm.id, id, "its template was deleted").await?;
                }
            }
            Ok::<(), OrchError>(())
        };
        let drained = drained.await;
        self.pools.forget(id);
        drained.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_fills_back_off_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
