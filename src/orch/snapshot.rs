//! Snapshots: save a running VM (state, memory, disk) into checksummed,
//! compressed artefacts and stop its VMM; restore loads them into a fresh
//! VMM with the same TAP, MAC, IP and SSH port.
//!
//! Failure safety: a snapshot that fails resumes the VM (it stays
//! `running`, never paused) and removes what it wrote; a restore that fails
//! (corrupt artefact, full disk, VMM error) leaves the VM `snapshotted`.
//! The snapshot row is written before any artefact and marked complete last,
//! so a crash leaves a record that start-up reconciliation cleans up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{self, Snapshot, Vm, VmState};
use crate::snapshot::{self, SnapshotError, SnapshotStore};
use crate::vmm::{SnapshotFiles, VmHandle};

use super::transitions::VmAction;
use super::{OrchError, Orchestrator};

/// A snapshot's artefacts, verified and decompressed.
#[derive(Debug, Clone)]
pub struct UnpackedSnapshot {
    pub files: SnapshotFiles,
    /// The VM's disk as it was saved (absent for diskless guests).
    pub disk: Option<PathBuf>,
}

const STATE: &str = "state.zst";
const MEMORY: &str = "memory.zst";
const DISK: &str = "disk.zst";

impl From<SnapshotError> for OrchError {
    fn from(error: SnapshotError) -> Self {
        match error {
            SnapshotError::Corrupt { .. } => OrchError::Corrupt {
                message: error.to_string(),
            },
            SnapshotError::NoSpace { .. } => OrchError::Exhausted {
                message: error.to_string(),
            },
            // The bucket does not answer (for now): 503, naming the HATCH_S3_* variables.
            SnapshotError::S3Unreachable { .. } => OrchError::Exhausted {
                message: error.to_string(),
            },
            // The configured bucket cannot be used: say so plainly (it names the HATCH_S3_* variables).
            SnapshotError::S3Config { .. } => OrchError::Internal(error.to_string()),
            other => OrchError::Internal(format!("snapshot storage: {other}")),
        }
    }
}

impl Orchestrator {
    /// The artefact store chosen at start (local directory or S3 bucket).
    pub(super) fn snapshot_store(&self) -> &dyn SnapshotStore {
        self.snapshots.as_ref()
    }

    /// Whether snapshot storage can be used now, for `GET /healthz`.
    pub async fn snapshot_storage_health(&self) -> snapshot::StorageHealth {
        self.snapshots.health().await
    }

    /// Scratch space for one snapshot or restore, inside the VM's directory.
    fn work_dir(&self, vm_id: &str, snapshot_id: &str) -> PathBuf {
        self.layout(vm_id).dir().join(format!("work-{snapshot_id}"))
    }

    pub async fn snapshot_vm(self: &Arc<Self>, id: &str) -> Result<Snapshot, OrchError> {
        let _guard = self.locks.lock(id).await;
        self.snapshot_locked(id).await
    }

    /// Takes a snapshot; the caller holds the VM's lock.
    pub(super) async fn snapshot_locked(self: &Arc<Self>, id: &str) -> Result<Snapshot, OrchError> {
        let mut vm = self.get_vm(id).await?;
        let snapshotting = self.check(&vm, VmAction::Snapshot)?;
        // Before the guest is paused: an unreachable bucket is a 503 and the VM runs on.
        self.snapshot_store().ensure_available().await?;
        let handle = self
            .handle(id)
            .ok_or_else(|| OrchError::Internal(format!("VM {id} has no VMM process")))?;
        self.transition(&mut vm, snapshotting, None)?;
        let mut record = Snapshot {
            id: model::random_id("snap", 10),
            vm_id: id.to_string(),
            created_at: model::now(),
            hypervisor: self.hypervisor.kind().as_str().to_string(),
            artefacts: Vec::new(),
            total_bytes: 0,
            complete: false,
        };
        let work = self.work_dir(id, &record.id);
        let saved = self.save(&handle, &mut record, &work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        if let Err(error) = saved {
            tracing::warn!(vm = %id, %error, "snapshot failed; resuming the VM");
            self.discard_snapshot(&record).await;
            let resumed = handle.resume().await;
            let reason = match &resumed {
                Ok(()) => format!("snapshot failed: {error}"),
                Err(resume_error) => format!("snapshot failed: {error}; resuming also failed: {resume_error}"),
            };
            self.transition(&mut vm, VmState::Running, Some(reason))?;
            return Err(error);
        }
        // Memory and disk are saved: the VMM is no longer needed.
        self.set_handle(id, None);
        handle.stop(Duration::ZERO).await;
        vm.pid = None;
        vm.ready_at = None;
        self.transition(&mut vm, VmState::Snapshotted, Some(format!("snapshot {}", record.id)))?;
        self.apply_retention(id).await;
        Ok(record)
    }

    async fn save(&self, handle: &Arc<dyn VmHandle>, record: &mut Snapshot, work: &Path) -> Result<(), OrchError> {
        self.store.upsert_snapshot(record)?;
        handle.pause().await?;
        let files = handle.save_snapshot(work).await?;
        let disk = self.layout(&record.vm_id).disk();
        let mut sources = vec![(STATE, files.state.clone())];
        if let Some(memory) = &files.memory {
            sources.push((MEMORY, memory.clone()));
        }
        if disk.exists() {
            sources.push((DISK, disk));
        }
        let store = self.snapshot_store();
        for (name, source) in sources {
            let packed = work.join(name);
            let info = snapshot::pack(&source, &packed).await?;
            store.put(&artefact_key(record, name), &packed).await?;
            let _ = tokio::fs::remove_file(&packed).await;
            record.total_bytes += info.compressed_bytes;
            record.artefacts.push(info);
            self.store.upsert_snapshot(record)?;
        }
        record.complete = true;
        self.store.upsert_snapshot(record)?;
        Ok(())
    }

    /// Removes a snapshot's artefacts and record (complete or not).
    pub(super) async fn discard_snapshot(&self, record: &Snapshot) {
        if let Err(error) = self
            .snapshot_store()
            .delete(&format!("{}/{}/", record.vm_id, record.id))
            .await
        {
            tracing::warn!(snapshot = %record.id, %error, "removing snapshot artefacts failed");
        }
        if let Err(error) = self.store.delete_snapshot(&record.id) {
            tracing::warn!(snapshot = %record.id, %error, "removing the snapshot record failed");
        }
    }

    /// Keeps the newest `HATCH_SNAPSHOT_KEEP` snapshots of a VM.
    async fn apply_retention(&self, vm_id: &str) {
        let Ok(snapshots) = self.store.list_snapshots(vm_id) else {
            return;
        };
        for old in snapshots.iter().skip(self.config.snapshot_retention.max(1) as usize) {
            tracing::info!(snapshot = %old.id, "removing a snapshot beyond the retention setting");
            self.discard_snapshot(old).await;
        }
    }

    pub async fn list_snapshots(&self, vm_id: &str) -> Result<Vec<Snapshot>, OrchError> {
        self.get_vm(vm_id).await?;
        Ok(self.store.list_snapshots(vm_id)?)
    }

    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), OrchError> {
        let snapshot = self
            .store
            .get_snapshot(snapshot_id)?
            .ok_or_else(|| OrchError::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        let _guard = self.locks.lock(&snapshot.vm_id).await;
        self.discard_snapshot(&snapshot).await;
        Ok(())
    }

    /// Restores the given snapshot, or the VM's newest one.
    pub async fn restore_vm(self: &Arc<Self>, id: &str, snapshot_id: Option<&str>) -> Result<Vm, OrchError> {
        let _guard = self.locks.lock(id).await;
        self.restore_locked(id, snapshot_id).await
    }

    /// Brings a VM back to `running` for a request through the proxy:
    /// restores a snapshotted VM, accepts one that already runs.
    pub async fn wake_vm(self: &Arc<Self>, id: &str) -> Result<Vm, OrchError> {
        let _guard = self.locks.lock(id).await;
        let vm = self.get_vm(id).await?;
        match vm.state {
            VmState::Running => Ok(vm),
            VmState::Snapshotted => self.restore_locked(id, None).await,
            other => Err(OrchError::Conflict {
                field: None,
                message: format!("VM {id} is {} and cannot be woken", other.as_str()),
            }),
        }
    }

    /// Restores a snapshot; the caller holds the VM's lock.
    async fn restore_locked(self: &Arc<Self>, id: &str, snapshot_id: Option<&str>) -> Result<Vm, OrchError> {
        let mut vm = self.get_vm(id).await?;
        let restoring = self.check(&vm, VmAction::Restore)?;
        let snapshot = match snapshot_id {
            Some(sid) => {
                self.store
                    .get_snapshot(sid)?
                    .filter(|s| s.vm_id == id)
                    .ok_or_else(|| OrchError::InvalidField {
                        field: "snapshot_id",
                        message: format!("VM {id} has no snapshot {sid}"),
                    })?
            }
            None => self
                .store
                .list_snapshots(id)?
                .into_iter()
                .next()
                .ok_or_else(|| OrchError::Conflict {
                    field: None,
                    message: format!("VM {id} has no snapshot to restore"),
                })?,
        };
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
        self.snapshot_store().ensure_available().await?;
        self.transition(&mut vm, restoring, None)?;
        let work = self.work_dir(id, &snapshot.id);
        let restored = self.load(&vm, &snapshot, &work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match restored {
            Ok(handle) => {
                vm.pid = Some(handle.pid());
                vm.ready_at = None;
                self.transition(
                    &mut vm,
                    VmState::Running,
                    Some(format!("restored from {}", snapshot.id)),
                )?;
                self.watch_process(&vm, handle);
                Ok(vm)
            }
            Err(error) => {
                tracing::warn!(vm = %id, %error, "restore failed; the VM stays snapshotted");
                self.transition(
                    &mut vm,
                    VmState::Snapshotted,
                    Some(format!("restore of {} failed: {error}", snapshot.id)),
                )?;
                Err(error)
            }
        }
    }

    /// Fetches and verifies every artefact before touching the VM's disk,
    /// then boots a fresh VMM from the saved state.
    async fn load(self: &Arc<Self>, vm: &Vm, snapshot: &Snapshot, work: &Path) -> Result<Arc<dyn VmHandle>, OrchError> {
        let image = self.store.get_image(&vm.image_id)?.ok_or_else(|| OrchError::Conflict {
            field: None,
            message: format!("image {} no longer exists", vm.image_id),
        })?;
        let unpacked = self.unpack_snapshot(snapshot, work).await?;
        if let Some(disk) = &unpacked.disk {
            let target = self.layout(&vm.id).disk();
            tokio::fs::rename(disk, &target)
                .await
                .map_err(|e| OrchError::Internal(format!("replacing {}: {e}", target.display())))?;
        }
        if let Some(identity) = &vm.network {
            let desired = self.desired_network()?;
            self.network.attach_vm(&vm.id, identity, &desired).await?;
        }
        let handle = self
            .hypervisor
            .restore(&self.launch_spec(vm, &image), &unpacked.files)
            .await?;
        Ok(Arc::from(handle))
    }

    /// Fetches a snapshot's artefacts into `work` (which it creates),
    /// verifying and decompressing each: the VMM's files ready for
    /// `Hypervisor::restore`, and the saved disk if there is one. Public for
    /// tools that load the same state outside orchestration (snapshot-bench).
    pub async fn unpack_snapshot(&self, snapshot: &Snapshot, work: &Path) -> Result<UnpackedSnapshot, OrchError> {
        tokio::fs::create_dir_all(work)
            .await
            .map_err(|e| OrchError::Internal(format!("creating {}: {e}", work.display())))?;
        let store = self.snapshot_store();
        let mut unpacked = Vec::new();
        for info in &snapshot.artefacts {
            let packed = work.join(&info.name);
            store.get(&artefact_key(snapshot, &info.name), &packed).await?;
            let plain = work.join(info.name.trim_end_matches(".zst"));
            snapshot::unpack(&packed, info, &plain).await?;
            let _ = tokio::fs::remove_file(&packed).await;
            unpacked.push((info.name.as_str(), plain));
        }
        let find = |name: &str| unpacked.iter().find(|(n, _)| *n == name).map(|(_, path)| path.clone());
        let state = find(STATE).ok_or_else(|| OrchError::Corrupt {
            message: format!("snapshot {} has no state artefact", snapshot.id),
        })?;
        Ok(UnpackedSnapshot {
            files: SnapshotFiles {
                state,
                memory: find(MEMORY),
            },
            disk: find(DISK),
        })
    }

    /// Removes all of a VM's snapshots (on delete).
    pub(super) async fn discard_all_snapshots(&self, vm_id: &str) {
        for snapshot in self.store.list_snapshots(vm_id).unwrap_or_default() {
            self.discard_snapshot(&snapshot).await;
        }
        let _ = self.snapshot_store().delete(&format!("{vm_id}/")).await;
    }
}

fn artefact_key(snapshot: &Snapshot, name: &str) -> String {
    format!("{}/{}/{}", snapshot.vm_id, snapshot.id, name)
}
