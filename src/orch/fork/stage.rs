//! The state clones are made from: a running VM's, saved while it is
//! paused (then it runs on), or a snapshot's, staged in a scratch directory
//! of the VM it belongs to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{self, Image, Snapshot, Vm, VmState};
use crate::vmm::{SnapshotFiles, VmHandle};

use super::super::create::clone_disk;
use super::super::snapshot::SavedState;
use super::super::transitions::Event;
use super::{no_agent, OrchError, Orchestrator, Staged};

impl Orchestrator {
    /// Stages the VM's state for `count` clones owned by `owner`, unless
    /// the owner's quotas could not hold them (checked before the VM is
    /// paused; again, authoritatively, as each clone is recorded).
    pub(super) async fn stage_vm(
        self: &Arc<Self>,
        id: &str,
        count: u32,
        owner: Option<&str>,
    ) -> Result<Staged, OrchError> {
        let _guard = self.locks.lock(id).await;
        let vm = self.get_vm(id).await?;
        self.check_vm_quotas(owner, count, vm.vcpu_count, vm.mem_mib).await?;
        match vm.state {
            VmState::Running => self.stage_running(vm).await,
            VmState::Snapshotted => {
                let snapshot = self.suspended_with(&vm).await?;
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
        let image = self.launchable_image(&vm).await?;
        self.admit_hot_copy(&vm)?;
        let Some(handle) = self.handle(&vm.id) else {
            return Err(OrchError::Internal(format!("VM {} has no VMM process", vm.id)));
        };
        self.apply(&mut vm, Event::Fork, Some("saving its state for a fork".into()))
            .await?;
        let dir = self.fork_dir(&vm.id);
        let saved = self.save_for_clones(&handle, &vm, &image, &dir).await;
        if let Err(resume_error) = handle.resume().await {
            remove_staged(&dir).await;
            let reason = format!("resuming after saving its state for a fork failed: {resume_error}");
            self.record_resume_failure(&mut vm, reason).await?;
            return Err(resume_error.into());
        }
        match saved {
            Ok((files, disk)) => {
                self.apply(
                    &mut vm,
                    Event::Forked,
                    Some("state saved for a fork; the guest runs on".into()),
                )
                .await?;
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
                self.apply(&mut vm, Event::SaveFailed, Some(reason)).await?;
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
        Ok((files, self.clone_vm_disk(vm, image, dir).await?))
    }

    /// A copy of `vm`'s disk in `dir` (none for an image without one).
    async fn clone_vm_disk(&self, vm: &Vm, image: &Image, dir: &Path) -> Result<Option<PathBuf>, OrchError> {
        if image.rootfs_path.is_none() {
            return Ok(None);
        }
        let disk = dir.join("disk");
        clone_disk(&self.layout(&vm.id).disk(), &disk).await?;
        Ok(Some(disk))
    }

    /// Stages a snapshot of `vm` (whose lock the caller holds): its hot
    /// copy and the VM's disk when the VM is suspended with it, else the
    /// stored artefacts, verified.
    pub(super) async fn stage_snapshot(self: &Arc<Self>, vm: Vm, snapshot: &Snapshot) -> Result<Staged, OrchError> {
        let id = vm.id.clone();
        let had_agent = self
            .store
            .run(move |store| store.vm_had_event(&id, crate::store::EventKind::Agent));
        if !had_agent.await? {
            return Err(no_agent(&vm.id, "its guest agent never connected"));
        }
        self.check_loadable_here(snapshot)?;
        let image = self.launchable_image(&vm).await?;
        // A pass still storing it has not yet checksummed the hot copy.
        let snapshot = &self.settled_snapshot(snapshot).await?;
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
        match self.saved_state(vm, snapshot).await? {
            SavedState::Hot(hot) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| OrchError::Internal(format!("creating {}: {e}", dir.display())))?;
                let files = link_snapshot_files(&hot, dir)?;
                Ok((files, self.clone_vm_disk(vm, image, dir).await?))
            }
            SavedState::Stored => {
                let unpacked = self.unpack_snapshot(snapshot, dir).await?;
                Ok((unpacked.files, unpacked.disk))
            }
        }
    }

    /// A fresh scratch directory for a fork from `vm_id`.
    fn fork_dir(&self, vm_id: &str) -> PathBuf {
        self.layout(vm_id)
            .dir()
            .join(format!("work-{}", model::random_id("fork", 8)))
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

pub(super) async fn remove_staged(dir: &Path) {
    if let Err(error) = tokio::fs::remove_dir_all(dir).await {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "removing a fork's staged state failed; the reconciler retries");
        }
    }
}
