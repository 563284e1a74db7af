//! The reconciler: the database says which VMs exist and in which state;
//! the host is made to match, at start-up, every `HATCH_RECONCILE_INTERVAL`
//! and right after an operation fails.
//!
//! Per VM (under its lock): an operation the daemon died in is finished or
//! undone (a `creating` VM is rolled back, `deleting` is finished,
//! `stopping` ends stopped, `snapshotting` resumes the guest or records the
//! finished snapshot, `restoring` goes back to `snapshotted`); a live VMM is
//! adopted; a dead one marks the VM `error` (and starts it again under
//! `restart_policy: on-failure`). Host-wide: VMM processes, VM directories,
//! snapshot records and artefacts that no VM owns are removed, and the
//! network (TAPs, DHCP, firewall chains) is made to match. Every repair is
//! logged and recorded as an event on the VM, or host-wide.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{RestartPolicy, Vm, VmState};
use crate::net::ReconcileReport;
use crate::store::EventKind;
use crate::sys::process;

use super::layout::vms_dir;
use super::transitions::Event;
use super::{OrchError, Orchestrator};

/// A VM that ran at least this long before its VMM died is restarted at
/// once; quicker deaths wait longer and longer (a crash loop costs little).
const STABLE_RUN: Duration = Duration::from_secs(60);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
const ADOPT_GRACE: Duration = Duration::from_secs(3);

/// Consecutive unasked VMM deaths of one VM.
#[derive(Debug, Clone, Copy)]
pub(super) struct CrashCount {
    count: u32,
    last: Instant,
}

impl Orchestrator {
    /// At start-up: bridge, chains and dnsmasq first (adopted VMs need
    /// them), then the full pass, including the snapshot store's sweep.
    pub(super) async fn reconcile_at_start(self: &Arc<Self>) -> Result<(), OrchError> {
        self.network.ensure_host().await?;
        let stranded = self.reconcile_pass().await?;
        self.sweep_snapshot_store().await;
        self.reattach_later(stranded);
        Ok(())
    }

    /// Runs the reconciler every `interval` and whenever an operation
    /// failed, until the orchestrator is gone or shuts down.
    pub fn spawn_reconciler(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let orch = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = orch.upgrade() else { return };
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = strong.reconcile_now.notified() => {}
                }
                drop(strong);
                let Some(orch) = orch.upgrade() else { return };
                if orch.operations.is_closing() {
                    return;
                }
                if let Err(error) = orch.reconcile_now().await {
                    tracing::error!(%error, "reconciling failed; trying again at the next interval");
                }
            }
        })
    }

    /// One pass now, excluding every operation while it runs.
    pub async fn reconcile_now(self: &Arc<Self>) -> Result<(), OrchError> {
        let _host = self.host_ops.write().await;
        let stranded = self.reconcile_pass().await?;
        self.reattach_later(stranded);
        Ok(())
    }

    /// One pass; returns the running VMs whose TAP had to be recreated (see
    /// [`Self::reattach_later`]).
    async fn reconcile_pass(self: &Arc<Self>) -> Result<Vec<String>, OrchError> {
        for vm in self.store.run(|store| store.list_vms()).await? {
            let _guard = self.locks.lock(&vm.id).await;
            // Read again under the lock: the supervisor may have moved it.
            let Some(vm) = self.stored_vm(&vm.id).await? else {
                continue;
            };
            let id = vm.id.clone();
            if let Err(error) = self.reconcile_vm(vm).await {
                tracing::warn!(vm = %id, %error, "reconciling the VM failed");
            }
        }
        let vms = self.store.run(|store| store.list_vms()).await?;
        self.kill_stray_vmms(&vms).await;
        self.remove_stray_dirs(&vms).await;
        self.remove_unfinished_snapshots(&vms).await?;
        self.reconcile_durability(&vms).await?;
        let report = self.network.reconcile(&self.desired_network().await?).await?;
        Ok(self.record_network_repairs(&vms, &report).await)
    }

    /// A VMM keeps the file of the TAP it opened: once that TAP was deleted,
    /// a recreated one carries no traffic for it. The guest is moved to a
    /// fresh VMM on the new TAP by a snapshot and restore (its RAM and
    /// processes are kept), as an operation of its own once this pass is
    /// over.
    fn reattach_later(self: &Arc<Self>, vm_ids: Vec<String>) {
        for vm_id in vm_ids {
            let orch = self.clone();
            tokio::spawn(async move {
                let id = vm_id.clone();
                let moved = orch
                    .run_operation(move |orch| async move {
                        let _guard = orch.locks.lock(&id).await;
                        if orch.get_vm(&id).await?.state != VmState::Running {
                            return Ok(false);
                        }
                        let snapshot = orch.snapshot_locked(&id, Default::default()).await?;
                        // A snapshot only for the move: not worth storing
                        // (restoring an unstored one removes it after).
                        orch.durability.wait(&snapshot.id, true).await;
                        orch.restore_locked(&id, Some(&snapshot.id), Default::default()).await?;
                        Ok(true)
                    })
                    .await;
                match moved {
                    Ok(true) => {
                        if let Ok(vm) = orch.get_vm(&vm_id).await {
                            orch.record_vm_repair(&vm, "network re-attached: the guest moved to a fresh VMM on the new TAP (snapshot and restore; RAM kept)").await;
                        }
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(vm = %vm_id, %error, "re-attaching the network failed"),
                }
            });
        }
    }

    async fn reconcile_vm(self: &Arc<Self>, mut vm: Vm) -> Result<(), OrchError> {
        match vm.state {
            VmState::Creating => return self.roll_back_create(vm).await,
            VmState::Deleting => return self.tear_down(&mut vm).await,
            VmState::Stopping => return self.halt(&mut vm, "stopped while the daemon was down").await,
            state if !state.has_process() => return Ok(()),
            _ => {}
        }
        if let Some(handle) = self.handle(&vm.id) {
            if vm.pid == Some(handle.pid()) && vm.state == VmState::Running {
                return Ok(()); // Watched by its supervisor.
            }
        }
        let marker = self.layout(&vm.id).dir().to_string_lossy().into_owned();
        let live_pid = vm.pid.filter(|pid| process::is_alive_with_marker(*pid, &marker));
        let Some(pid) = live_pid else {
            return self.record_lost_process(vm).await;
        };
        if vm.state == VmState::Snapshotting {
            if let Some(snapshot_id) = self.snapshot_finished_since(&vm).await? {
                // Cut short between recording the snapshot and stopping the
                // VMM: the snapshot asked for is whole, so honour it.
                process::terminate(pid, ADOPT_GRACE).await;
                return self.record_saved(vm, snapshot_id).await;
            }
        }
        if vm.state == VmState::Restoring {
            // A half-loaded VMM is not trusted: the snapshot is still there.
            process::terminate(pid, ADOPT_GRACE).await;
            vm.pid = None;
            self.apply(
                &mut vm,
                Event::BootFailed,
                Some("restore interrupted by a daemon restart".into()),
            )
            .await?;
            return Ok(());
        }
        let adopted = match self.image_of(&vm).await {
            Ok(image) => self
                .hypervisor
                .adopt(&self.launch_spec(&vm, &image), pid)
                .await
                .map_err(OrchError::from),
            Err(error) => Err(error),
        };
        let handle = match adopted {
            Ok(handle) => Arc::from(handle),
            Err(error) => {
                process::terminate(pid, ADOPT_GRACE).await;
                vm.pid = None;
                vm.ready_at = None;
                let reason = format!("could not re-attach to the VMM after a daemon restart: {error}");
                return self.record_crash(vm, reason).await;
            }
        };
        tracing::info!(vm = %vm.id, pid, "adopted running VMM");
        match vm.state {
            VmState::Snapshotting => {
                // Cut short mid-snapshot: the guest may be paused.
                let resumed: Arc<dyn crate::vmm::VmHandle> = handle;
                resumed.resume().await?;
                self.watch_process(&vm, resumed).await;
                self.apply(
                    &mut vm,
                    Event::SaveFailed,
                    Some("snapshot interrupted by a daemon restart; the guest was resumed".into()),
                )
                .await?;
            }
            VmState::Starting => {
                self.watch_process(&vm, handle).await;
                self.apply(
                    &mut vm,
                    Event::Booted,
                    Some("started (finished after a daemon restart)".into()),
                )
                .await?;
            }
            _ => self.watch_process(&vm, handle).await,
        }
        Ok(())
    }

    /// The VM's VMM is gone though its state says it runs.
    async fn record_lost_process(self: &Arc<Self>, mut vm: Vm) -> Result<(), OrchError> {
        self.set_handle(&vm.id, None);
        vm.pid = None;
        vm.ready_at = None;
        match vm.state {
            VmState::Starting => {
                self.apply(
                    &mut vm,
                    Event::Halted,
                    Some("start interrupted by a daemon restart".into()),
                )
                .await?;
                Ok(())
            }
            VmState::Restoring => {
                self.apply(
                    &mut vm,
                    Event::BootFailed,
                    Some("restore interrupted by a daemon restart".into()),
                )
                .await?;
                Ok(())
            }
            // The VMM is only stopped once the snapshot is complete.
            VmState::Snapshotting => match self.snapshot_finished_since(&vm).await? {
                Some(snapshot_id) => self.record_saved(vm, snapshot_id).await,
                None => {
                    let reason = "the VMM ended during a snapshot that did not complete".to_string();
                    self.record_crash(vm, reason).await
                }
            },
            _ => {
                let reason = "the VMM process is gone (it ended without being asked)".to_string();
                self.record_crash(vm, reason).await
            }
        }
    }

    /// A snapshot that completed as the daemon went down: the VM is
    /// suspended with it.
    async fn record_saved(&self, mut vm: Vm, snapshot_id: String) -> Result<(), OrchError> {
        self.set_handle(&vm.id, None);
        vm.pid = None;
        vm.ready_at = None;
        vm.snapshot_id = Some(snapshot_id.clone());
        let reason = format!("snapshot {snapshot_id} (completed as the daemon went down)");
        self.apply(&mut vm, Event::Saved, Some(reason)).await?;
        Ok(())
    }

    /// Marks the VM `error`, and starts it again if its policy says so.
    pub(super) async fn record_crash(self: &Arc<Self>, mut vm: Vm, reason: String) -> Result<(), OrchError> {
        self.apply(&mut vm, Event::VmmCrashed, Some(reason)).await?;
        if vm.restart_policy == RestartPolicy::OnFailure {
            self.schedule_restart(&vm.id);
        }
        Ok(())
    }

    /// Starts a crashed `on-failure` VM again, after a delay that doubles
    /// with each crash that followed a short run.
    fn schedule_restart(self: &Arc<Self>, vm_id: &str) {
        let delay = {
            let mut crashes = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let entry = crashes
                .entry(vm_id.to_string())
                .or_insert(CrashCount { count: 0, last: now });
            if now.duration_since(entry.last) > STABLE_RUN {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            restart_delay(entry.count)
        };
        tracing::info!(vm = %vm_id, delay_ms = delay.as_millis() as u64, "restarting (restart_policy on-failure)");
        let orch = Arc::downgrade(self);
        let vm_id = vm_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(orch) = orch.upgrade() else { return };
            match orch.start_vm(&vm_id).await {
                Ok(_) => {}
                // Deleted, stopped or started by someone meanwhile: nothing to do.
                Err(OrchError::NotFound { .. } | OrchError::InvalidState { .. }) => {}
                Err(error) => tracing::warn!(vm = %vm_id, %error, "restart after a crash failed"),
            }
        });
    }

    /// Undoes a create the daemon died in: nothing it made stays.
    async fn roll_back_create(&self, mut vm: Vm) -> Result<(), OrchError> {
        tracing::warn!(vm = %vm.id, "rolling back a create cut short by a daemon restart");
        self.kill_process(&vm).await;
        if let Some(identity) = &vm.network {
            let desired: Vec<_> = self
                .desired_network()
                .await?
                .into_iter()
                .filter(|(other, _)| *other != vm.id)
                .collect();
            self.network.detach_vm(&vm.id, identity, &desired).await?;
        }
        let dir = self.layout(&vm.id).dir().to_path_buf();
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                return Err(OrchError::Internal(format!("removing {}: {error}", dir.display())));
            }
        }
        let routed = vm.id.clone();
        self.store.run(move |store| store.delete_routes_of(&routed)).await?;
        vm.pid = None;
        self.apply(
            &mut vm,
            Event::BootFailed,
            Some("create interrupted by a daemon restart".into()),
        )
        .await?;
        Ok(())
    }

    /// VMM processes running out of our VM directories that belong to no VM.
    async fn kill_stray_vmms(&self, vms: &[Vm]) {
        let prefix = format!("{}/", vms_dir(&self.config.data_dir).display());
        let owned: HashSet<u32> = vms
            .iter()
            .filter_map(|vm| self.handle(&vm.id).map(|h| h.pid()))
            .collect();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            if owned.contains(&pid) || pid == std::process::id() {
                continue;
            }
            let Some(args) = process::cmdline(pid) else { continue };
            let is_vmm = args
                .first()
                .is_some_and(|prog| prog.contains("qemu-system") || prog.contains("firecracker"));
            if is_vmm && args.iter().any(|arg| arg.contains(&prefix)) {
                tracing::warn!(pid, "stopping a VMM process that belongs to no VM");
                self.record_host_repair(&format!("stopped VMM process {pid}, which belonged to no VM"))
                    .await;
                process::terminate(pid, ADOPT_GRACE).await;
            }
        }
    }

    /// The newest complete snapshot taken since the VM began snapshotting.
    async fn snapshot_finished_since(&self, vm: &Vm) -> Result<Option<String>, OrchError> {
        let id = vm.id.clone();
        Ok(self
            .store
            .run(move |store| store.list_snapshots(&id))
            .await?
            .into_iter()
            .next()
            .filter(|s| s.created_at >= vm.updated_at)
            .map(|s| s.id))
    }

    /// Snapshot records a crash left half-written or half-deleted, and
    /// scratch directories. No operation runs meanwhile, so an incomplete
    /// record is never one being written.
    async fn remove_unfinished_snapshots(&self, vms: &[Vm]) -> Result<(), OrchError> {
        for snapshot in self.store.run(|store| store.list_incomplete_snapshots()).await? {
            tracing::warn!(snapshot = %snapshot.id, "removing a snapshot a crash left incomplete or half-deleted");
            // Storage that does not answer (a bucket outage) must not stop
            // the rest of the pass; the marked record is tried again.
            match self.discard_snapshot(&snapshot).await {
                Ok(()) => {
                    self.record_host_repair(&format!("removed unfinished snapshot {}", snapshot.id))
                        .await
                }
                Err(error) => tracing::warn!(snapshot = %snapshot.id, %error, "removing it failed; trying again later"),
            }
        }
        for vm in vms {
            let Ok(entries) = std::fs::read_dir(self.layout(&vm.id).dir()) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("work-") {
                    let _ = tokio::fs::remove_dir_all(entry.path()).await;
                }
            }
        }
        Ok(())
    }

    /// Artefacts in the snapshot store that no record owns. Costly on a
    /// bucket, so at start-up only; a failure is logged, not fatal.
    async fn sweep_snapshot_store(&self) {
        if let Err(error) = self.remove_stray_snapshots().await {
            tracing::warn!(%error, "sweeping the snapshot store failed");
        }
    }

    async fn remove_stray_snapshots(&self) -> Result<(), OrchError> {
        let store = self.snapshot_store();
        store.sweep_partials().await?;
        let known: HashSet<(String, String)> = self
            .store
            .run(|store| store.all_snapshot_ids())
            .await?
            .into_iter()
            .collect();
        // Only this host's own objects (its prefix in a shared bucket), and
        // only old ones: a young object may be an upload not yet recorded.
        match store.sweep_orphans(&known, self.config.snapshot_sweep_min_age).await {
            Ok(0) => {}
            Ok(removed) => tracing::warn!(removed, "removed snapshot artefacts no snapshot record owns"),
            Err(error) => tracing::warn!(%error, "skipped sweeping snapshot artefacts no record owns"),
        }
        Ok(())
    }

    /// VM directories whose VM no longer exists.
    async fn remove_stray_dirs(&self, vms: &[Vm]) {
        let known: HashSet<&str> = vms.iter().map(|vm| vm.id.as_str()).collect();
        let Ok(entries) = std::fs::read_dir(vms_dir(&self.config.data_dir)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(name.as_str()) {
                tracing::warn!(dir = %entry.path().display(), "removing the directory of a VM that no longer exists");
                if let Err(error) = tokio::fs::remove_dir_all(entry.path()).await {
                    tracing::error!(%error, "removing stray VM directory failed");
                } else {
                    self.record_host_repair(&format!("removed directory {name} of a VM that no longer exists"))
                        .await;
                }
            }
        }
    }

    /// What the network reconcile repaired, as events: on the VM whose TAP
    /// it was, host-wide otherwise.
    async fn record_network_repairs(&self, vms: &[Vm], report: &ReconcileReport) -> Vec<String> {
        let mut stranded = Vec::new();
        for repair in &report.repairs {
            let owner = vms.iter().find(|vm| {
                vm.network
                    .as_ref()
                    .is_some_and(|n| repair.contains(&format!("TAP {} ", n.tap_name)))
            });
            match owner {
                // A VMM keeps the file of the TAP it opened: a recreated
                // TAP carries no traffic for it until it is started anew.
                Some(vm) if vm.state == VmState::Running && repair.contains("missing") => {
                    self.record_vm_repair(vm, repair).await;
                    stranded.push(vm.id.clone());
                }
                Some(vm) => self.record_vm_repair(vm, repair).await,
                None => self.record_host_repair(repair).await,
            }
        }
        for (vm_id, reason) in &report.skipped {
            tracing::warn!(vm = %vm_id, %reason, "VM's network identity is unusable; it gets no host network state");
        }
        stranded
    }

    pub(super) async fn record_vm_repair(&self, vm: &Vm, detail: &str) {
        tracing::warn!(vm = %vm.id, %detail, "repaired");
        self.metrics.count_repair(crate::metrics::RepairScope::Vm);
        let (id, state, detail) = (vm.id.clone(), vm.state, detail.to_string());
        let recorded = self.store.run(move |store| store.record_vm_repair(&id, state, &detail));
        if let Err(error) = recorded.await {
            tracing::error!(%error, "recording a repair failed");
        }
    }

    pub(super) async fn record_host_repair(&self, detail: &str) {
        tracing::warn!(%detail, "repaired");
        self.metrics.count_repair(crate::metrics::RepairScope::Host);
        let detail = detail.to_string();
        let recorded = self
            .store
            .run(move |store| store.record_host_event(EventKind::Repair, &detail));
        if let Err(error) = recorded.await {
            tracing::error!(%error, "recording a repair failed");
        }
    }
}

/// 0 s after a crash that followed a stable run, then 2 s, 4 s, … up to a minute.
fn restart_delay(consecutive: u32) -> Duration {
    if consecutive <= 1 {
        return Duration::ZERO;
    }
    let doubled = Duration::from_secs(1u64 << (consecutive - 1).min(6));
    doubled.min(MAX_RESTART_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![0, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
