//! Fork and create-from-snapshot: one VM's saved state restored into new
//! VMs.
//!
//! The state comes from a running VM (paused only while the hypervisor
//! saves it and its disk is cloned, then resumed) or from a snapshot. It is
//! staged in a scratch directory of the source VM (`work-fork-…`, which the
//! reconciler sweeps after a crash). Each new VM is recorded like a create
//! (`creating` first, so a crash rolls it back; its own TAP, IP, MAC, port,
//! disk and seed), restored instead of booted, and stays `creating` until
//! its agent has taken its own identity; only then does it run, so no two
//! VMs ever answer for one address. A fork is all or nothing: when one
//! clone fails, the others are removed too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::model::{self, Egress, Image, Lifetime, RestartPolicy, Snapshot, Vm, VmState};
use crate::net::NetRequest;
use crate::vmm::{SnapshotFiles, VmHandle};

use super::create::{clone_disk, DiskOrigin, Plan};
use super::ledger::Ledger;
use super::operations::Accepted;
use super::transitions::Event;
use super::{OrchError, Orchestrator};

/// Most VMs one fork makes.
pub const MAX_FORK_COUNT: u32 = 16;
/// How long a clone may take from restore until it has taken its identity
/// (a software-emulated guest on a busy host is slow to be scheduled).
const IDENTITY_WAIT: Duration = Duration::from_secs(120);
/// Clones restored at once: each restore reads the whole saved state.
const RESTORES_AT_ONCE: usize = 4;

/// What a clone may choose for itself; everything else is its parent's.
#[derive(Debug, Clone, Default)]
pub struct CloneSettings {
    /// The key that will own the clones (quotas are checked against it).
    pub owner: Option<String>,
    pub lifetime: Option<Lifetime>,
    pub restart_policy: Option<RestartPolicy>,
    pub egress: Option<Egress>,
}

/// A VM's state saved for clones: the hypervisor's files and the disk as
/// it was saved, in a scratch directory of the parent's.
struct Staged {
    dir: PathBuf,
    files: SnapshotFiles,
    disk: Option<PathBuf>,
    parent: Vm,
    image: Image,
    /// Named in the clones' events.
    origin: String,
}

impl Orchestrator {
    /// `POST /vms/{id}/fork`: `count` new VMs from the VM's state now (a
    /// running VM is paused briefly) or from the snapshot it was suspended
    /// with. Answers them ready, or nothing was made.
    pub async fn fork_vm(self: &Arc<Self>, id: &str, count: u32, settings: CloneSettings) -> Result<Vec<Vm>, OrchError> {
        if !(1..=MAX_FORK_COUNT).contains(&count) {
            return Err(OrchError::InvalidField {
                field: "count",
                message: format!("must be 1 to {MAX_FORK_COUNT}, got {count}"),
            });
        }
        let id = id.to_string();
        self.run_vm_operation(Some(id.clone()), move |orch| async move {
            let staged = orch.stage_vm(&id).await?;
            let made = orch.clone_staged(&staged, count, &settings, Accepted::default()).await;
            remove_staged(&staged.dir).await;
            made
        })
        .await
    }

    /// `POST /vms {"snapshot_id": …}`: one new VM restored from the
    /// snapshot (the caller's right to read it was checked by the API).
    pub(super) async fn create_from_snapshot_op(
        self: &Arc<Self>,
        snapshot_id: &str,
        settings: CloneSettings,
        accepted: Accepted,
    ) -> Result<Vm, OrchError> {
        let missing = || OrchError::InvalidField {
            field: "snapshot_id",
            message: format!("no snapshot {snapshot_id}"),
        };
        let snapshot = self.store.get_snapshot(snapshot_id)?.ok_or_else(missing)?;
        let staged = {
            let _guard = self.locks.lock(&snapshot.vm_id).await;
            let vm = self.get_vm(&snapshot.vm_id).await?;
            // Read again under the lock: a delete may have removed it.
            let snapshot = self.store.get_snapshot(snapshot_id)?.ok_or_else(missing)?;
            self.stage_snapshot(vm, &snapshot).await?
        };
        let made = self.clone_staged(&staged, 1, &settings, accepted).await;
        remove_staged(&staged.dir).await;
        made?
            .pop()
            .ok_or_else(|| OrchError::Internal("the clone was not made".into()))
    }

    async fn stage_vm(self: &Arc<Self>, id: &str) -> Result<Staged, OrchError> {
        let _guard = self.locks.lock(id).await;
        let vm = self.get_vm(id).await?;
        match vm.state {
            VmState::Running => self.stage_running(vm).await,
            VmState::Snapshotted => {
                let snapshot = self.suspended_with(&vm)?;
                self.stage_snapshot(vm, &snapshot).await
            }
            state => Err(OrchError::InvalidState {
                state,
                message: format!(
                    "cannot fork VM {id} while it is {}: forks are made from running or snapshotted VMs",
                    state.as_str()
                ),
            }),
        }
    }

    /// Saves a running VM's state and disk for clones, then resumes it.
    async fn stage_running(self: &Arc<Self>, mut vm: Vm) -> Result<Staged, OrchError> {
        self.agent_conversation(&vm)
            .await
            .map_err(|e| no_agent(&vm.id, &e.to_string()))?;
        let image = self.launchable_image(&vm)?;
        self.admit_hot_copy(&vm)?;
        let Some(handle) = self.handle(&vm.id) else {
            return Err(OrchError::Internal(format!("VM {} has no VMM process", vm.id)));
        };
        self.apply(&mut vm, Event::Fork, Some("saving its state for a fork".into()))?;
        let dir = self.fork_dir(&vm.id);
        let saved = self.save_for_clones(&handle, &vm, &image, &dir).await;
        if let Err(resume_error) = handle.resume().await {
            remove_staged(&dir).await;
            self.kill_process(&vm).await;
            vm.pid = None;
            vm.ready_at = None;
            let reason = format!("resuming after saving its state for a fork failed: {resume_error}");
            self.apply(&mut vm, Event::ResumeFailed, Some(reason))?;
            return Err(resume_error.into());
        }
        match saved {
            Ok((files, disk)) => {
                self.apply(&mut vm, Event::Forked, Some("state saved for a fork; the guest runs on".into()))?;
                let origin = format!("forked from {}", vm.id);
                Ok(Staged {
                    dir,
                    files,
                    disk,
                    parent: vm,
                    image,
                    origin,
                })
            }
            Err(error) => {
                remove_staged(&dir).await;
                let reason = format!("saving its state for a fork failed: {error}; the guest runs on");
                self.apply(&mut vm, Event::Forked, Some(reason))?;
                Err(error)
            }
        }
    }

    /// Pauses the guest, has the hypervisor save it into `dir` and clones
    /// its disk beside it (the caller resumes it).
    async fn save_for_clones(
        &self,
        handle: &Arc<dyn VmHandle>,
        vm: &Vm,
        image: &Image,
        dir: &Path,
    ) -> Result<(SnapshotFiles, Option<PathBuf>), OrchError> {
        handle.pause().await?;
        let files = handle.save_snapshot(dir).await?;
        let disk = match image.rootfs_path {
            Some(_) => {
                let disk = dir.join("disk");
                clone_disk(&self.layout(&vm.id).disk(), &disk).await?;
                Some(disk)
            }
            None => None,
        };
        Ok((files, disk))
    }

    /// Stages a snapshot of `vm` (whose lock the caller holds): its hot
    /// copy and the VM's disk when the VM is suspended with it, else the
    /// stored artefacts, verified.
    async fn stage_snapshot(self: &Arc<Self>, vm: Vm, snapshot: &Snapshot) -> Result<Staged, OrchError> {
        if !self.store.vm_had_event(&vm.id, crate::store::EventKind::Agent)? {
            return Err(no_agent(&vm.id, "its guest agent never connected"));
        }
        if snapshot.hypervisor != self.hypervisor.kind().as_str() {
            return Err(OrchError::Conflict {
                field: Some("snapshot_id"),
                message: format!(
                    "snapshot {} was made by {}, but this host runs {}",
                    snapshot.id,
                    snapshot.hypervisor,
                    self.hypervisor.kind().as_str()
                ),
            });
        }
        let image = self.launchable_image(&vm)?;
        let dir = self.fork_dir(&vm.id);
        let staged = self.copy_snapshot(&vm, &image, snapshot, &dir).await;
        let (files, disk) = match staged {
            Ok(staged) => staged,
            Err(error) => {
                remove_staged(&dir).await;
                return Err(error);
            }
        };
        Ok(Staged {
            dir,
            files,
            disk,
            origin: format!("restored from snapshot {} of {}", snapshot.id, vm.id),
            parent: vm,
            image,
        })
    }

    async fn copy_snapshot(
        self: &Arc<Self>,
        vm: &Vm,
        image: &Image,
        snapshot: &Snapshot,
        dir: &Path,
    ) -> Result<(SnapshotFiles, Option<PathBuf>), OrchError> {
        if let Some(hot) = self.usable_hot_copy(vm, snapshot).await {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| OrchError::Internal(format!("creating {}: {e}", dir.display())))?;
            let files = link_snapshot_files(&hot, dir)?;
            let disk = match image.rootfs_path {
                Some(_) => {
                    let disk = dir.join("disk");
                    clone_disk(&self.layout(&vm.id).disk(), &disk).await?;
                    Some(disk)
                }
                None => None,
            };
            return Ok((files, disk));
        }
        if !snapshot.durable {
            return Err(OrchError::Corrupt {
                message: format!(
                    "snapshot {} has no usable local copy and was never stored (see the reconciler's events)",
                    snapshot.id
                ),
            });
        }
        let unpacked = self.unpack_snapshot(snapshot, dir).await?;
        Ok((unpacked.files, unpacked.disk))
    }

    /// Records `count` clones of the staged VM (all or none), then restores
    /// them; when one fails, all are removed.
    async fn clone_staged(
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
                let id = self.new_vm_id()?;
                self.record_new_vm(&id, &plan).await
            }
            .await;
            match vm {
                Ok(vm) => recorded.push(vm),
                Err(error) => {
                    for vm in recorded {
                        self.forget_unborn_clone(vm).await;
                    }
                    return Err(error);
                }
            }
        }
        if let Some(first) = recorded.first() {
            accepted.send(first);
        }
        let restored: Vec<Result<Vm, OrchError>> = futures_util::stream::iter(recorded)
            .map(|vm| self.bring_up_clone(vm, staged, &plan))
            .buffered(RESTORES_AT_ONCE)
            .collect()
            .await;
        // Each clone is recorded ready by its agent's hello once its
        // identity is taken (the hello waited for the clone's lock).
        let mut ready = Vec::new();
        let mut first_error = None;
        for outcome in restored {
            let waited = match outcome {
                Ok(vm) => self.wait_ready(&vm.id, IDENTITY_WAIT).await.map_err(|e| (Some(vm), e)),
                Err(error) => Err((None, error)),
            };
            match waited {
                Ok(vm) => ready.push(vm),
                Err((made, error)) => {
                    ready.extend(made);
                    first_error = first_error.or(Some(error));
                }
            }
        }
        match first_error {
            None => Ok(ready.into_iter().map(|vm| self.with_agent(vm)).collect()),
            Some(error) => {
                for vm in ready {
                    self.remove_clone(&vm.id).await;
                }
                Err(error)
            }
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
            lifetime: settings.lifetime.map_or(parent.lifetime, |chosen| chosen.or(parent.lifetime)),
            owner: settings.owner.clone(),
            pool_template_id: None,
        }
    }

    /// Makes one recorded clone's host state, restores the staged state
    /// into it and waits until it has taken its identity; on failure
    /// everything it held is released and its record removed.
    async fn bring_up_clone(self: &Arc<Self>, vm: Vm, staged: &Staged, plan: &Plan) -> Result<Vm, OrchError> {
        let _guard = self.locks.lock(&vm.id).await;
        let mut ledger = Ledger::new();
        match self.restore_clone(&vm, staged, plan, &mut ledger).await {
            Ok(vm) => {
                ledger.commit();
                Ok(vm)
            }
            Err(error) => {
                tracing::warn!(vm = %vm.id, %error, "a clone failed; releasing everything it held");
                self.identities.forget(&vm.id);
                self.set_handle(&vm.id, None);
                ledger.rollback().await;
                let mut vm = vm;
                vm.pid = None;
                if let Err(record_error) =
                    self.apply(&mut vm, Event::BootFailed, Some(format!("clone failed: {error}")))
                {
                    tracing::error!(vm = %vm.id, %record_error, "removing the record of a failed clone failed");
                }
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
    ) -> Result<Vm, OrchError> {
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
        self.watch_process(&running, handle);
        match tokio::time::timeout(IDENTITY_WAIT, taken).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(no_agent(&vm.id, &format!("it did not take its new identity: {error}"))),
            Ok(Err(_)) | Err(_) => {
                return Err(no_agent(
                    &vm.id,
                    &format!(
                        "its guest agent did not connect within {} s of the restore",
                        IDENTITY_WAIT.as_secs()
                    ),
                ))
            }
        }
        // The hello may have recorded readiness meanwhile: keep it.
        let mut current = self.store.get_vm(&vm.id)?.ok_or_else(|| OrchError::vm_not_found(&vm.id))?;
        current.pid = running.pid;
        self.apply(&mut current, Event::Booted, Some(staged.origin.clone()))?;
        Ok(current)
    }

    /// Removes a clone that was recorded but never restored (its row is
    /// all it holds).
    async fn forget_unborn_clone(&self, mut vm: Vm) {
        let _guard = self.locks.lock(&vm.id).await;
        if let Err(error) = self.apply(&mut vm, Event::BootFailed, Some("another clone of the fork failed".into())) {
            tracing::error!(vm = %vm.id, %error, "removing an unborn clone failed");
        }
    }

    /// Deletes a clone that came up while another of its fork failed.
    async fn remove_clone(&self, id: &str) {
        let _guard = self.locks.lock(id).await;
        let Ok(mut vm) = self.get_vm(id).await else { return };
        let reason = "another clone of the fork failed".to_string();
        if let Err(error) = self.delete_locked(&mut vm, reason, Accepted::default()).await {
            tracing::warn!(vm = %id, %error, "removing a clone failed; the reconciler finishes it");
        }
    }

    /// A fresh scratch directory for a fork from `vm_id`.
    fn fork_dir(&self, vm_id: &str) -> PathBuf {
        self.layout(vm_id)
            .dir()
            .join(format!("work-fork-{}", model::random_id("", 8).trim_start_matches('-')))
    }
}

fn no_agent(vm_id: &str, why: &str) -> OrchError {
    OrchError::AgentUnavailable {
        message: format!(
            "VM {vm_id} cannot be cloned: {why}. Forks need an image with hatch-agent, through which each clone \
             takes its own MAC, address and hostname"
        ),
    }
}

/// Hard links of a hot copy's files (never written again, only removed)
/// in `dir`; copies where links cannot be made.
fn link_snapshot_files(hot: &SnapshotFiles, dir: &Path) -> Result<SnapshotFiles, OrchError> {
    let link = |from: &Path| -> Result<PathBuf, OrchError> {
        let name = from
            .file_name()
            .ok_or_else(|| OrchError::Internal(format!("{} has no file name", from.display())))?;
        let to = dir.join(name);
        if std::fs::hard_link(from, &to).is_err() {
            crate::sys::clone_file::clone_file(from, &to)
                .map_err(|e| OrchError::Internal(format!("copying {}: {e}", from.display())))?;
        }
        Ok(to)
    };
    Ok(SnapshotFiles {
        state: link(&hot.state)?,
        memory: hot.memory.as_deref().map(link).transpose()?,
    })
}

async fn remove_staged(dir: &Path) {
    if let Err(error) = tokio::fs::remove_dir_all(dir).await {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "removing a fork's staged state failed; the reconciler retries");
        }
    }
}
