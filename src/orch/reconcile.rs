//! Start-up reconciliation: the database says which VMs exist; the host is
//! made to match. Live VMM processes are adopted (not killed), dead ones are
//! marked, and anything of Hatch's on the host that no VM owns is removed:
//! stray VMM processes, VM directories, TAPs, forwards and reservations.

use std::collections::HashSet;
use std::sync::Arc;

use crate::model::{Vm, VmState};
use crate::sys::process;

use super::layout::vms_dir;
use super::{OrchError, Orchestrator};

impl Orchestrator {
    pub(super) async fn reconcile(self: &Arc<Self>) -> Result<(), OrchError> {
        self.network.ensure_host().await?;
        for vm in self.store.list_vms()? {
            let _guard = self.locks.lock(&vm.id).await;
            self.reconcile_vm(vm).await?;
        }
        let vms = self.store.list_vms()?;
        self.kill_stray_vmms(&vms).await;
        self.remove_stray_dirs(&vms).await;
        self.remove_stray_snapshots(&vms).await?;
        let report = self.network.reconcile(&self.desired_network()?).await?;
        tracing::info!(?report, "host network reconciled");
        Ok(())
    }

    async fn reconcile_vm(self: &Arc<Self>, mut vm: Vm) -> Result<(), OrchError> {
        if !vm.state.has_process() {
            return Ok(());
        }
        let marker = self.layout(&vm.id).dir().to_string_lossy().into_owned();
        let live_pid = vm.pid.filter(|pid| process::is_alive_with_marker(*pid, &marker));
        let Some(pid) = live_pid else {
            vm.pid = None;
            vm.ready_at = None;
            let (state, reason) = match vm.state {
                VmState::Stopping => (VmState::Stopped, "stopped while the daemon was down"),
                // The VMM is only stopped once the snapshot is complete.
                VmState::Snapshotting if self.snapshot_finished_since(&vm)? => {
                    (VmState::Snapshotted, "snapshot completed as the daemon went down")
                }
                VmState::Restoring => (VmState::Snapshotted, "restore interrupted by a daemon restart"),
                _ => (VmState::Error, "the VMM process ended while the daemon was not running"),
            };
            return self.transition(&mut vm, state, Some(reason.into()));
        };
        if vm.state == VmState::Restoring {
            // A half-loaded VMM is not trusted: the snapshot is still there.
            process::terminate(pid, std::time::Duration::from_secs(3)).await;
            vm.pid = None;
            return self.transition(
                &mut vm,
                VmState::Snapshotted,
                Some("restore interrupted by a daemon restart".into()),
            );
        }
        let adopted = match self.store.get_image(&vm.image_id)? {
            Some(image) => self
                .hypervisor
                .adopt(&self.launch_spec(&vm, &image), pid)
                .await
                .map_err(OrchError::from),
            None => Err(OrchError::Internal(format!("image {} no longer exists", vm.image_id))),
        };
        match adopted {
            Ok(handle) => {
                tracing::info!(vm = %vm.id, pid, "adopted running VMM");
                if vm.state == VmState::Snapshotting {
                    // Cut short mid-snapshot: the guest may be paused.
                    handle.resume().await?;
                }
                self.watch_process(&vm, Arc::from(handle));
                match vm.state {
                    VmState::Running => Ok(()),
                    // An operation was cut short by the daemon's death; the
                    // process lives, so the VM runs.
                    _ => self.transition(&mut vm, VmState::Running, Some("resumed after a daemon restart".into())),
                }
            }
            Err(error) => {
                process::terminate(pid, std::time::Duration::from_secs(3)).await;
                vm.pid = None;
                self.transition(
                    &mut vm,
                    VmState::Error,
                    Some(format!("could not re-attach after a daemon restart: {error}")),
                )
            }
        }
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
                process::terminate(pid, std::time::Duration::from_secs(3)).await;
            }
        }
    }

    /// Whether a complete snapshot was taken since the VM began snapshotting.
    fn snapshot_finished_since(&self, vm: &Vm) -> Result<bool, OrchError> {
        Ok(self
            .store
            .list_snapshots(&vm.id)?
            .first()
            .is_some_and(|s| s.created_at >= vm.updated_at))
    }

    /// Half-written snapshots, scratch directories and artefacts no record owns.
    async fn remove_stray_snapshots(&self, vms: &[Vm]) -> Result<(), OrchError> {
        for snapshot in self.store.list_incomplete_snapshots()? {
            tracing::warn!(snapshot = %snapshot.id, "removing a snapshot a crash left incomplete");
            self.discard_snapshot(&snapshot).await;
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
        let store = self.snapshot_store();
        store.sweep_partials().await?;
        let known: HashSet<(String, String)> = self.store.all_snapshot_ids()?.into_iter().collect();
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
                }
            }
        }
    }
}
