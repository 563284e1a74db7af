//! Boot, stop, start and delete of one VM. Callers hold the VM's lock.

use std::sync::Arc;
use std::time::Duration;

use crate::cloudinit::{self, SeedInput};
use crate::model::{Image, UserData, Vm};
use crate::vmm::{DiskSpec, KernelFiles, NicSpec, VmHandle, VmLaunch, DEFAULT_STOP_GRACE};

use super::operations::Accepted;
use super::transitions::{self, Decision, Event};
use super::{Applied, OrchError, Orchestrator};

/// Deleting does not wait long for a polite shutdown.
const DELETE_GRACE: Duration = Duration::from_secs(3);

impl Orchestrator {
    /// Describes to the hypervisor how to run `vm` from `image`.
    pub(super) fn launch_spec(&self, vm: &Vm, image: &Image) -> VmLaunch {
        let layout = self.layout(&vm.id);
        let mut disks = Vec::new();
        if image.rootfs_path.is_some() {
            disks.push(DiskSpec {
                id: "rootfs".into(),
                path: layout.disk(),
                read_only: false,
            });
        }
        disks.push(DiskSpec {
            id: "seed".into(),
            path: layout.seed(),
            read_only: true,
        });
        VmLaunch {
            vm_id: vm.id.clone(),
            vcpu_count: vm.vcpu_count,
            mem_mib: vm.mem_mib,
            kernel: KernelFiles {
                elf: image.kernel_path.clone(),
                bzimage: image.bzimage_path.clone(),
            },
            initrd: image.initrd_path.clone(),
            disks,
            nic: vm.network.as_ref().map(|net| NicSpec {
                tap_name: net.tap_name.clone(),
                mac: net.guest_mac.clone(),
            }),
            boot_args: image.boot_args.clone(),
            run_dir: layout.dir().to_path_buf(),
        }
    }

    /// How `vm`'s VMM is launched (TAP, MAC, disks, kernel): public for
    /// tools that run the same guest outside orchestration (hatch-bench).
    pub async fn launch_spec_of(&self, vm: &Vm) -> Result<VmLaunch, OrchError> {
        Ok(self.launch_spec(vm, &self.image_of(vm).await?))
    }

    /// Launches the VMM for a VM in `creating`, `starting` or `restoring`
    /// and moves it to `running`.
    pub(super) async fn boot(self: &Arc<Self>, mut vm: Vm, image: &Image) -> Result<Vm, OrchError> {
        let spec = self.launch_spec(&vm, image);
        let handle: Arc<dyn VmHandle> = Arc::from(self.hypervisor.launch(&spec).await?);
        self.record_booted(&mut vm, handle, None).await?;
        Ok(vm)
    }

    /// Records a freshly launched VMM as the VM's process (`Booted`) and
    /// starts watching it; a VMM whose launch cannot be recorded is ended.
    pub(super) async fn record_booted(
        self: &Arc<Self>,
        vm: &mut Vm,
        handle: Arc<dyn VmHandle>,
        reason: Option<String>,
    ) -> Result<(), OrchError> {
        vm.pid = Some(handle.pid());
        vm.ready_at = None;
        vm.snapshot_id = None;
        if let Err(error) = self.apply(vm, Event::Booted, reason).await {
            handle.stop(DELETE_GRACE).await;
            vm.pid = None;
            return Err(error);
        }
        self.watch_process(vm, handle).await;
        Ok(())
    }

    pub(super) async fn stop_op(self: &Arc<Self>, id: &str, accepted: Accepted) -> Result<Vm, OrchError> {
        let _guard = self.locks.lock(id).await;
        let vm = self.get_vm(id).await?;
        self.stop_locked(vm, None, accepted).await
    }

    /// Stops `vm`, whose lock the caller holds; `reason` (none: a user's
    /// request) goes on its `stopping` and `stopped` events.
    pub(super) async fn stop_locked(
        &self,
        mut vm: Vm,
        reason: Option<String>,
        mut accepted: Accepted,
    ) -> Result<Vm, OrchError> {
        if self.apply(&mut vm, Event::Stop, reason.clone()).await? == Applied::Already {
            accepted.send(&vm);
            return Ok(vm);
        }
        accepted.send(&vm);
        let reason = reason.unwrap_or_else(|| "stopped by request".into());
        self.halt(&mut vm, &reason).await?;
        Ok(vm)
    }

    /// Ends the VMM of a VM in `stopping` (or a `starting` one cut short)
    /// and records it stopped.
    pub(super) async fn halt(&self, vm: &mut Vm, reason: &str) -> Result<(), OrchError> {
        if let Some(handle) = self.handle(&vm.id) {
            self.set_handle(&vm.id, None);
            let report = handle.stop(DEFAULT_STOP_GRACE).await;
            tracing::info!(vm = %vm.id, code = ?report.code, signal = ?report.signal, "VMM stopped");
        }
        // A VMM known only by its pid (the daemon restarted mid-stop).
        self.kill_process(vm).await;
        vm.pid = None;
        vm.ready_at = None;
        self.apply(vm, Event::Halted, Some(reason.into())).await?;
        Ok(())
    }

    pub(super) async fn start_op(self: &Arc<Self>, id: &str, mut accepted: Accepted) -> Result<Vm, OrchError> {
        let _guard = self.locks.lock(id).await;
        let mut vm = self.get_vm(id).await?;
        let applied = {
            // Admitted and recorded as one step: the memory counts from here.
            let _allocating = self.allocation.lock().await;
            if matches!(transitions::decide(vm.state, Event::Start), Decision::Enter(_)) {
                self.admit_memory(id, vm.mem_mib).await?;
            }
            self.apply(&mut vm, Event::Start, None).await?
        };
        if applied == Applied::Already {
            accepted.send(&vm);
            return Ok(vm);
        }
        accepted.send(&vm);
        match self.restart_from_disk(vm.clone()).await {
            Ok(vm) => Ok(vm),
            Err(error) => {
                self.kill_process(&vm).await;
                vm.pid = None;
                self.apply(&mut vm, Event::BootFailed, Some(format!("start failed: {error}")))
                    .await?;
                Err(error)
            }
        }
    }

    async fn restart_from_disk(self: &Arc<Self>, vm: Vm) -> Result<Vm, OrchError> {
        let image = self.launchable_image(&vm).await?;
        let layout = self.layout(&vm.id);
        std::fs::create_dir_all(layout.dir())
            .map_err(|e| OrchError::Internal(format!("creating {}: {e}", layout.dir().display())))?;
        if image.rootfs_path.is_some() && !layout.disk().exists() {
            return Err(OrchError::Internal(format!(
                "the VM's disk {} is missing",
                layout.disk().display()
            )));
        }
        let seed = SeedInput {
            instance_id: vm.id.clone(),
            user_data: vm.user_data.clone().map(UserData::into_bytes),
            public_keys: vm.ssh_authorized_keys.clone(),
            nic_mac: vm.network.as_ref().map(|n| n.guest_mac.clone()),
        };
        cloudinit::write_seed(&seed, &layout.seed()).await?;
        if let Some(identity) = &vm.network {
            let desired = self.desired_network().await?;
            self.network.attach_vm(&vm.id, identity, &desired).await?;
        }
        self.boot(vm, &image).await
    }

    /// The image a VM boots from, checked again before every launch: its
    /// files must still be regular files in the import directories (one
    /// could have been swapped for a link to Hatch's own state).
    pub(super) async fn launchable_image(&self, vm: &Vm) -> Result<Image, OrchError> {
        let image = self.image_of(vm).await?;
        self.check_image_files(&image)?;
        Ok(image)
    }

    pub(super) fn check_image_files(&self, image: &Image) -> Result<(), OrchError> {
        let import = self.config.import_dirs();
        let files = [
            ("kernel_path", &image.kernel_path),
            ("kernel_path", &image.bzimage_path),
            ("initrd_path", &image.initrd_path),
            ("rootfs_path", &image.rootfs_path),
        ];
        for (field, path) in files {
            if let Some(path) = path {
                import.check(field, path).map_err(|error| OrchError::Conflict {
                    field: Some("image_id"),
                    message: format!("image {} cannot be used: {error}", image.id),
                })?;
            }
        }
        Ok(())
    }

    /// The image a VM runs, which must still be registered.
    pub(super) async fn image_of(&self, vm: &Vm) -> Result<Image, OrchError> {
        self.stored_image(&vm.image_id)
            .await?
            .ok_or_else(|| OrchError::Internal(format!("image {} of VM {} no longer exists", vm.image_id, vm.id)))
    }

    /// Deleting is recorded first (`deleting`), then everything the VM held
    /// is released; a teardown cut short (an error, a crash) is finished by
    /// the reconciler or by deleting again.
    pub(super) async fn delete_op(self: &Arc<Self>, id: &str, accepted: Accepted) -> Result<(), OrchError> {
        let _guard = self.locks.lock(id).await;
        let mut vm = self.get_vm(id).await?;
        self.delete_locked(&mut vm, "deleted by request".into(), accepted).await
    }

    /// Deletes `vm`, whose lock the caller holds; `reason` goes on its
    /// `deleting` event.
    pub(super) async fn delete_locked(
        &self,
        vm: &mut Vm,
        reason: String,
        mut accepted: Accepted,
    ) -> Result<(), OrchError> {
        self.apply(vm, Event::Delete, Some(reason)).await?;
        accepted.send(vm);
        self.tear_down(vm).await
    }

    /// Releases everything a `deleting` VM holds, then its record. Every
    /// step is idempotent. The caller holds the VM's lock.
    pub(super) async fn tear_down(&self, vm: &mut Vm) -> Result<(), OrchError> {
        let id = vm.id.clone();
        self.kill_process(vm).await;
        if let Some(identity) = &vm.network {
            let desired: Vec<_> = self
                .desired_network()
                .await?
                .into_iter()
                .filter(|(other, _)| *other != id)
                .collect();
            self.network.detach_vm(&id, identity, &desired).await?;
        }
        self.discard_all_snapshots(&id).await?;
        let dir = self.layout(&id).dir().to_path_buf();
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                return Err(OrchError::Internal(format!("removing {}: {error}", dir.display())));
            }
        }
        let routed = id.clone();
        self.store.run(move |store| store.delete_routes_of(&routed)).await?;
        self.apply(vm, Event::TornDown, None).await?;
        tracing::info!(vm = %id, "deleted");
        Ok(())
    }

    /// Ends the VM's VMM process, whether we hold a handle to it or only
    /// know its pid (e.g. an adoption that failed).
    pub(super) async fn kill_process(&self, vm: &Vm) {
        if let Some(handle) = self.handle(&vm.id) {
            handle.stop(DELETE_GRACE).await;
        }
        self.set_handle(&vm.id, None);
        if let Some(pid) = vm.pid {
            let marker = self.layout(&vm.id).dir().to_string_lossy().into_owned();
            if crate::sys::process::is_alive_with_marker(pid, &marker) {
                crate::sys::process::terminate(pid, DELETE_GRACE).await;
            }
        }
    }
}
