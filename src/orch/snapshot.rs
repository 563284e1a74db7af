//! Snapshots: save a running VM (state, memory, disk) into checksummed,
//! compressed artefacts and stop its VMM; restore loads them into a fresh
//! VMM with the same TAP, MAC, IP and SSH port.
//!
//! Failure safety: a snapshot that fails resumes the VM (it stays
//! `running`, never paused) and removes what it wrote; a restore that fails
//! (corrupt artefact, full disk, VMM error) leaves the VM `snapshotted`.
//! The snapshot row is written before any artefact and marked complete last,
//! so a crash leaves a record that reconciliation cleans up. A snapshotted
//! VM remembers the snapshot it was suspended with (`snapshot_id`): that one
//! is what restore and wake load, and it cannot be deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{self, Snapshot, Vm, VmState};
use crate::snapshot::{self, SnapshotError, SnapshotStore};
use crate::store::{Store, StoreError};
use crate::vmm::{SnapshotFiles, VmHandle, VmLaunch};

use super::hot_copy::restore_hot;
use super::operations::Accepted;
use super::transitions::{self, Decision, Event};
use super::{Applied, OrchError, Orchestrator};

/// A snapshot's artefacts, verified and decompressed.
#[derive(Debug, Clone)]
pub struct UnpackedSnapshot {
    pub files: SnapshotFiles,
    /// The VM's disk as it was saved (absent for diskless guests).
    pub disk: Option<PathBuf>,
}

/// See [`Orchestrator::saved_state`].
pub(super) enum SavedState {
    /// The hot copy's files, verified.
    Hot(SnapshotFiles),
    /// Only the stored artefacts: each is verified as it is read.
    Stored,
}

pub(super) const STATE: &str = "state.zst";
pub(super) const MEMORY: &str = "memory.zst";
pub(super) const DISK: &str = "disk.zst";

impl From<SnapshotError> for OrchError {
    fn from(error: SnapshotError) -> Self {
        match error {
            SnapshotError::Corrupt { .. } => OrchError::Corrupt {
                message: error.to_string(),
            },
            // The image a disk diff needs is gone or changed: 409, naming it.
            SnapshotError::BaseChanged { .. } => OrchError::Conflict {
                field: Some("image_id"),
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

    /// Takes a snapshot; the caller holds the VM's lock. On a VM already
    /// `snapshotted`, answers with the snapshot it was suspended with.
    pub(super) async fn snapshot_locked(
        self: &Arc<Self>,
        id: &str,
        mut accepted: Accepted,
    ) -> Result<Snapshot, OrchError> {
        let mut vm = self.get_vm(id).await?;
        let mut record = Snapshot {
            id: model::random_id("snap", 10),
            vm_id: id.to_string(),
            created_at: model::now(),
            hypervisor: self.hypervisor.kind().as_str().to_string(),
            artefacts: Vec::new(),
            total_bytes: 0,
            complete: false,
            durable: false,
            hot_checksums: Default::default(),
            owner_key_id: vm.owner_key_id.clone(),
        };
        if matches!(transitions::decide(vm.state, Event::Snapshot), Decision::Enter(_)) {
            // Before the guest is paused: an unreachable bucket is a 503 and the VM runs on.
            self.snapshot_store().ensure_available().await?;
            // The record (not yet complete) holds the owner's quota from
            // here on; a refusal leaves the VM running and nothing written.
            let reserved = record.clone();
            self.store
                .run(move |store| {
                    let quotas = store.quotas_of(reserved.owner_key_id.as_deref())?;
                    store.reserve_snapshot(&reserved, &quotas)
                })
                .await?;
            if let Err(error) = self.admit_hot_copy(&vm) {
                self.forget_snapshot_record(&record.id).await;
                return Err(error);
            }
        }
        let applied = match self.apply(&mut vm, Event::Snapshot, None).await {
            Ok(applied) => applied,
            Err(error) => {
                self.forget_snapshot_record(&record.id).await;
                return Err(error);
            }
        };
        if applied == Applied::Already {
            accepted.send(&vm);
            return self.suspended_with(&vm).await;
        }
        accepted.send(&vm);
        // The record was reserved a moment before the VM entered
        // `snapshotting`; dated to that entry, a crash after it completed is
        // recognised as this snapshot's (see `snapshot_finished_since`),
        // rather than leaving a stopped VMM that looks like a crash.
        record.created_at = vm.updated_at;
        let Some(handle) = self.handle(id) else {
            self.forget_snapshot_record(&record.id).await;
            vm.pid = None;
            self.apply(
                &mut vm,
                Event::VmmCrashed,
                Some("the VM had no VMM process to snapshot".into()),
            )
            .await?;
            return Err(OrchError::Internal(format!("VM {id} has no VMM process")));
        };
        let hot = self.hot_dir(id, &record.id);
        let saved = self.save_hot(&handle, &record, &hot).await;
        if let Err(error) = saved {
            tracing::warn!(vm = %id, %error, "snapshot failed; resuming the VM");
            let _ = tokio::fs::remove_dir_all(&hot).await;
            if let Err(discard_error) = self.discard_snapshot(&record).await {
                tracing::warn!(snapshot = %record.id, %discard_error, "the reconciler will remove it");
            }
            match handle.resume().await {
                Ok(()) => {
                    self.apply(&mut vm, Event::SaveFailed, Some(format!("snapshot failed: {error}")))
                        .await?;
                }
                Err(resume_error) => {
                    let reason = format!("snapshot failed: {error}; resuming also failed: {resume_error}");
                    self.record_resume_failure(&mut vm, reason).await?;
                }
            }
            return Err(error);
        }
        // The hot copy is whole: the snapshot can be restored from here on,
        // and the VMM is no longer needed.
        record.complete = true;
        self.save_snapshot_record(&record).await?;
        self.set_handle(id, None);
        handle.stop(Duration::ZERO).await;
        vm.pid = None;
        vm.ready_at = None;
        vm.snapshot_id = Some(record.id.clone());
        self.apply(&mut vm, Event::Saved, Some(format!("snapshot {}", record.id)))
            .await?;
        self.make_durable_later(record.clone());
        self.apply_retention(&vm).await;
        Ok(record)
    }

    /// A paused guest that could not be resumed after its state was saved
    /// ends: its VMM is stopped and the VM is `error`.
    pub(super) async fn record_resume_failure(&self, vm: &mut Vm, reason: String) -> Result<(), OrchError> {
        self.kill_process(vm).await;
        vm.pid = None;
        vm.ready_at = None;
        self.apply(vm, Event::ResumeFailed, Some(reason)).await?;
        Ok(())
    }

    /// The snapshot a `snapshotted` VM would restore from.
    pub(super) async fn suspended_with(&self, vm: &Vm) -> Result<Snapshot, OrchError> {
        let vm = vm.clone();
        self.store.run(move |store| suspended_with(store, &vm)).await
    }

    /// Writes the snapshot's record (new or changed) on a blocking thread.
    async fn save_snapshot_record(&self, record: &Snapshot) -> Result<(), OrchError> {
        let row = record.clone();
        Ok(self.store.run(move |store| store.upsert_snapshot(&row)).await?)
    }

    /// Removes the record of a snapshot that never got any artefact; one
    /// left behind (the write failed) is the reconciler's to remove.
    async fn forget_snapshot_record(&self, id: &str) {
        let id = id.to_string();
        let _ = self.store.run(move |store| store.delete_snapshot(&id)).await;
    }

    /// Pauses the guest and has the hypervisor save it into `hot`: the
    /// only part of a snapshot the guest waits for.
    async fn save_hot(&self, handle: &Arc<dyn VmHandle>, record: &Snapshot, hot: &Path) -> Result<(), OrchError> {
        self.save_snapshot_record(record).await?;
        handle.pause().await?;
        let saved = handle.save_snapshot(hot).await?;
        Self::name_hot_files(hot, &saved)?;
        Ok(())
    }

    /// Removes a snapshot (complete or not): the record is marked first
    /// (no longer listed or restorable), then the artefacts go, then the
    /// record. Cut short, the marked record is finished by the reconciler;
    /// there is never a record whose artefacts are gone.
    pub(super) async fn discard_snapshot(&self, record: &Snapshot) -> Result<(), OrchError> {
        let id = record.id.clone();
        self.store.run(move |store| store.mark_snapshot_deleting(&id)).await?;
        self.durability.wait(&record.id, true).await;
        let _ = tokio::fs::remove_dir_all(self.hot_dir(&record.vm_id, &record.id)).await;
        self.snapshot_store()
            .delete(&format!("{}/{}/", record.vm_id, record.id))
            .await?;
        let id = record.id.clone();
        self.store.run(move |store| store.delete_snapshot(&id)).await?;
        Ok(())
    }

    /// Keeps the newest `HATCH_SNAPSHOT_KEEP` snapshots of a VM, and always
    /// the one it was suspended with.
    async fn apply_retention(&self, vm: &Vm) {
        let id = vm.id.clone();
        let Ok(snapshots) = self.store.run(move |store| store.list_snapshots(&id)).await else {
            return;
        };
        let keep = self.config.snapshot_retention.max(1) as usize;
        for old in snapshots.iter().skip(keep) {
            if vm.snapshot_id.as_deref() == Some(old.id.as_str()) {
                continue;
            }
            tracing::info!(snapshot = %old.id, "removing a snapshot beyond the retention setting");
            if let Err(error) = self.discard_snapshot(old).await {
                tracing::warn!(snapshot = %old.id, %error, "removing an old snapshot failed; the reconciler retries");
            }
        }
    }

    pub async fn list_snapshots(&self, vm_id: &str) -> Result<Vec<Snapshot>, OrchError> {
        self.get_vm(vm_id).await?;
        let vm_id = vm_id.to_string();
        Ok(self.store.run(move |store| store.list_snapshots(&vm_id)).await?)
    }

    /// Deletes a snapshot, unless it is the one a `snapshotted` VM would
    /// restore from (409 `invalid_state`: that VM would be lost).
    pub async fn delete_snapshot(self: &Arc<Self>, snapshot_id: &str) -> Result<(), OrchError> {
        let snapshot_id = snapshot_id.to_string();
        self.run_operation(move |orch| async move {
            let not_found = || OrchError::NotFound {
                kind: "snapshot",
                id: snapshot_id.clone(),
            };
            let snapshot = orch.stored_snapshot(&snapshot_id).await?.ok_or_else(not_found)?;
            let _guard = orch.locks.lock(&snapshot.vm_id).await;
            // Read again under the lock: a restore or delete may have run.
            let id = snapshot_id.clone();
            let (snapshot, holder) = orch
                .store
                .run(move |store| {
                    let Some(snapshot) = store.get_snapshot(&id)? else {
                        return Ok((None, None));
                    };
                    let vm = store.get_vm(&snapshot.vm_id)?;
                    let in_use = match &vm {
                        Some(vm) => {
                            vm.state == VmState::Snapshotted
                                && (vm.snapshot_id.as_deref() == Some(snapshot.id.as_str())
                                    || (vm.snapshot_id.is_none() && suspended_with(store, vm)?.id == snapshot.id))
                        }
                        None => false,
                    };
                    Ok::<_, OrchError>((Some(snapshot), vm.filter(|_| in_use)))
                })
                .await?;
            let snapshot = snapshot.ok_or_else(not_found)?;
            if let Some(vm) = holder {
                return Err(OrchError::InvalidState {
                    state: vm.state,
                    message: format!(
                        "snapshot {} holds snapshotted VM {}: deleting it would lose the VM \
                         (restore the VM first, or delete the VM)",
                        snapshot.id, vm.id
                    ),
                });
            }
            orch.discard_snapshot(&snapshot).await
        })
        .await
    }

    /// Restores a snapshot (the one the VM was suspended with, unless
    /// another is named); the caller holds the VM's lock. A VM that already
    /// runs is answered as it is when no snapshot was named.
    pub(super) async fn restore_locked(
        self: &Arc<Self>,
        id: &str,
        snapshot_id: Option<&str>,
        mut accepted: Accepted,
    ) -> Result<Vm, OrchError> {
        let mut vm = self.get_vm(id).await?;
        let event = match snapshot_id {
            Some(_) => Event::RestoreNamed,
            None => Event::Restore,
        };
        match transitions::decide(vm.state, event) {
            Decision::Already => {
                accepted.send(&vm);
                return Ok(vm);
            }
            Decision::Refuse => return Err(OrchError::invalid_state(id, vm.state, "restore")),
            Decision::Enter(_) | Decision::Remove => {}
        }
        let snapshot = match snapshot_id {
            Some(sid) => self
                .stored_snapshot(sid)
                .await?
                .filter(|s| s.vm_id == id)
                .ok_or_else(|| OrchError::InvalidField {
                    field: "snapshot_id",
                    message: format!("VM {id} has no snapshot {sid}"),
                })?,
            None => self.suspended_with(&vm).await?,
        };
        self.check_loadable_here(&snapshot)?;
        if !self.has_hot_copy(&vm, &snapshot) {
            self.snapshot_store().ensure_available().await?;
        }
        {
            let _allocating = self.allocation.lock().await;
            self.admit_memory(id, vm.mem_mib).await?;
            self.apply(&mut vm, event, None).await?;
        }
        accepted.send(&vm);
        let work = self.work_dir(id, &snapshot.id);
        let restored = self.load_when_stored(&vm, &snapshot, &work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match restored {
            Ok((handle, snapshot)) => {
                // Running again, the VM's disk moves on from every hot copy;
                // a snapshot never stored can no longer be.
                self.remove_hot_copies_later(id);
                if !snapshot.durable {
                    self.discard_snapshot(&snapshot).await?;
                }
                self.record_booted(&mut vm, handle, Some(format!("restored from {}", snapshot.id)))
                    .await?;
                Ok(vm)
            }
            Err(error) => {
                tracing::warn!(vm = %id, %error, "restore failed; the VM stays snapshotted");
                self.apply(
                    &mut vm,
                    Event::BootFailed,
                    Some(format!("restore of {} failed: {error}", snapshot.id)),
                )
                .await?;
                Err(error)
            }
        }
    }

    /// A snapshot loads only into the hypervisor that made it.
    pub(super) fn check_loadable_here(&self, snapshot: &Snapshot) -> Result<(), OrchError> {
        if snapshot.hypervisor == self.hypervisor.kind().as_str() {
            return Ok(());
        }
        Err(OrchError::Conflict {
            field: Some("snapshot_id"),
            message: format!(
                "snapshot {} was made by {}, but this host runs {}",
                snapshot.id,
                snapshot.hypervisor,
                self.hypervisor.kind().as_str()
            ),
        })
    }

    /// A pass still storing this snapshot reads the VM's disk: lets it
    /// finish, then loads the snapshot as it recorded it.
    async fn load_when_stored(
        self: &Arc<Self>,
        vm: &Vm,
        snapshot: &Snapshot,
        work: &Path,
    ) -> Result<(Arc<dyn VmHandle>, Snapshot), OrchError> {
        let snapshot = self.settled_snapshot(snapshot).await?;
        let handle = self.load(vm, &snapshot, work).await?;
        Ok((handle, snapshot))
    }

    /// `snapshot` as recorded once a pass storing it has finished (it
    /// reads the VM's disk and checksums the hot copy).
    pub(super) async fn settled_snapshot(&self, snapshot: &Snapshot) -> Result<Snapshot, OrchError> {
        self.durability.wait(&snapshot.id, false).await;
        self.stored_snapshot(&snapshot.id)
            .await?
            .ok_or_else(|| OrchError::NotFound {
                kind: "snapshot",
                id: snapshot.id.clone(),
            })
    }

    /// Where `snapshot`'s state loads from: its hot copy while `vm` sleeps
    /// in it and it is intact (the VM's disk is then the one saved), else
    /// its stored artefacts.
    pub(super) async fn saved_state(&self, vm: &Vm, snapshot: &Snapshot) -> Result<SavedState, OrchError> {
        if let Some(files) = self.usable_hot_copy(vm, snapshot).await {
            return Ok(SavedState::Hot(files));
        }
        stored_at_all(snapshot)?;
        Ok(SavedState::Stored)
    }

    /// Boots a fresh VMM from the saved state: the hot copy when it is
    /// valid and intact (the VM's disk is then the one saved), else the
    /// stored artefacts, each verified before the guest runs. A VMM that
    /// loads a stream gets the stored state straight from the store;
    /// others get it unpacked into `work`.
    async fn load(self: &Arc<Self>, vm: &Vm, snapshot: &Snapshot, work: &Path) -> Result<Arc<dyn VmHandle>, OrchError> {
        let spec = self.launch_spec(vm, &self.launchable_image(vm).await?);
        if let Some(files) = self.hot_copy(vm, snapshot) {
            self.attach_restored_network(vm).await?;
            if let Some(handle) = self.load_hot(vm, snapshot, &spec, &files).await? {
                return Ok(Arc::from(handle));
            }
        }
        stored_at_all(snapshot)?;
        let handle = if self.hypervisor.loads_streamed_state() {
            self.load_streamed(vm, snapshot, spec, work).await?
        } else {
            self.load_unpacked(vm, snapshot, &spec, work).await?
        };
        Ok(Arc::from(handle))
    }

    /// Loads `vm`'s hot copy of `snapshot` (see [`restore_hot`]). `None`
    /// when the copy is damaged: it is recorded and removed, and the stored
    /// artefacts serve instead.
    async fn load_hot(
        &self,
        vm: &Vm,
        snapshot: &Snapshot,
        spec: &VmLaunch,
        files: &SnapshotFiles,
    ) -> Result<Option<Box<dyn VmHandle>>, OrchError> {
        match restore_hot(self.hypervisor.as_ref(), spec, files, &snapshot.hot_checksums).await? {
            Ok(handle) => Ok(Some(handle)),
            Err(damage) => {
                self.discard_damaged_hot_copy(vm, snapshot, damage).await;
                Ok(None)
            }
        }
    }

    /// The stored state streamed from the store into a VMM that loads a
    /// stream; the other artefacts (the disk) unpacked into `work` first.
    async fn load_streamed(
        &self,
        vm: &Vm,
        snapshot: &Snapshot,
        mut spec: VmLaunch,
        work: &Path,
    ) -> Result<Box<dyn VmHandle>, OrchError> {
        let state = snapshot
            .artefacts
            .iter()
            .find(|a| a.name == STATE)
            .ok_or_else(|| no_state(snapshot))?;
        let unpacked = self.unpack_artefacts(snapshot, work, Some(STATE)).await?;
        // The VMM opens the saved disk where it was unpacked; it
        // replaces the VM's disk only once the state is verified too.
        let saved_disk = unpacked.disk();
        let target = self.layout(&vm.id).disk();
        if let (Some(saved), Some(rootfs)) = (&saved_disk, spec.disks.iter_mut().find(|d| d.path == target)) {
            rootfs.path = saved.clone();
        }
        self.attach_restored_network(vm).await?;
        let source = self.snapshot_store().open(&artefact_key(snapshot, STATE)).await?;
        let place_disk = || {
            saved_disk
                .as_deref()
                .map_or(Ok(()), |saved| replace_disk(saved, &target))
        };
        super::restore_streamed(self.hypervisor.as_ref(), &spec, source, state, place_disk).await
    }

    /// The stored artefacts unpacked into `work` and loaded from there.
    async fn load_unpacked(
        &self,
        vm: &Vm,
        snapshot: &Snapshot,
        spec: &VmLaunch,
        work: &Path,
    ) -> Result<Box<dyn VmHandle>, OrchError> {
        let unpacked = self.unpack_artefacts(snapshot, work, None).await?;
        if let Some(saved) = unpacked.disk() {
            replace_disk(&saved, &self.layout(&vm.id).disk())?;
        }
        self.attach_restored_network(vm).await?;
        Ok(self.hypervisor.restore(&spec, &unpacked.files(snapshot)?).await?)
    }

    async fn attach_restored_network(&self, vm: &Vm) -> Result<(), OrchError> {
        if let Some(identity) = &vm.network {
            let desired = self.desired_network().await?;
            self.network.attach_vm(&vm.id, identity, &desired).await?;
        }
        Ok(())
    }

    /// Unpacks a snapshot's artefacts into `work` (which it creates),
    /// verifying each as it is read from the store: the VMM's files ready for
    /// `Hypervisor::restore`, and the saved disk if there is one. Public for
    /// tools that load the same state outside orchestration (hatch-bench).
    pub async fn unpack_snapshot(&self, snapshot: &Snapshot, work: &Path) -> Result<UnpackedSnapshot, OrchError> {
        let unpacked = self.unpack_artefacts(snapshot, work, None).await?;
        Ok(UnpackedSnapshot {
            files: unpacked.files(snapshot)?,
            disk: unpacked.disk(),
        })
    }

    /// Unpacks every artefact of `snapshot` but `skip` into `work`.
    async fn unpack_artefacts(
        &self,
        snapshot: &Snapshot,
        work: &Path,
        skip: Option<&str>,
    ) -> Result<Unpacked, OrchError> {
        tokio::fs::create_dir_all(work)
            .await
            .map_err(|e| OrchError::Internal(format!("creating {}: {e}", work.display())))?;
        // A disk stored as a diff needs its base unchanged: checked before
        // anything is fetched.
        let disk_base = match snapshot.artefacts.iter().find_map(|a| a.base.as_ref()) {
            Some(base) => Some(self.disk_base(base).await?),
            None => None,
        };
        let store = self.snapshot_store();
        let mut unpacked = Vec::new();
        for info in snapshot.artefacts.iter().filter(|a| Some(a.name.as_str()) != skip) {
            // Streamed from the store through the checksum and zstd: no
            // compressed copy in `work`.
            let packed = store.open(&artefact_key(snapshot, &info.name)).await?;
            let plain = work.join(info.name.trim_end_matches(".zst"));
            self.unpack_artefact(packed, info, disk_base.as_deref(), &plain).await?;
            unpacked.push((info.name.clone(), plain));
        }
        Ok(Unpacked(unpacked))
    }

    /// Removes all of a VM's snapshots, complete or not (on delete).
    pub(super) async fn discard_all_snapshots(&self, vm_id: &str) -> Result<(), OrchError> {
        let id = vm_id.to_string();
        let records = self
            .store
            .run(move |store| {
                let mut records = store.list_snapshots(&id)?;
                records.extend(store.list_incomplete_snapshots()?.into_iter().filter(|s| s.vm_id == id));
                Ok::<_, StoreError>(records)
            })
            .await?;
        for snapshot in &records {
            self.discard_snapshot(snapshot).await?;
        }
        self.snapshot_store().delete(&format!("{vm_id}/")).await?;
        self.remove_hot_copies(vm_id, None).await;
        Ok(())
    }
}

/// The snapshot a `snapshotted` VM would restore from (for callers
/// already on a blocking thread).
pub(super) fn suspended_with(store: &Store, vm: &Vm) -> Result<Snapshot, OrchError> {
    let found = match &vm.snapshot_id {
        Some(id) => store.get_snapshot(id)?,
        None => store.list_snapshots(&vm.id)?.into_iter().next(),
    };
    found.ok_or_else(|| OrchError::Internal(format!("VM {} is snapshotted but its snapshot is missing", vm.id)))
}

pub(super) fn artefact_key(snapshot: &Snapshot, name: &str) -> String {
    format!("{}/{}/{}", snapshot.vm_id, snapshot.id, name)
}

/// Unpacked artefacts: (artefact name, file).
struct Unpacked(Vec<(String, PathBuf)>);

impl Unpacked {
    fn find(&self, name: &str) -> Option<PathBuf> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, path)| path.clone())
    }

    fn files(&self, snapshot: &Snapshot) -> Result<SnapshotFiles, OrchError> {
        Ok(SnapshotFiles {
            state: self.find(STATE).ok_or_else(|| no_state(snapshot))?,
            memory: self.find(MEMORY),
        })
    }

    fn disk(&self) -> Option<PathBuf> {
        self.find(DISK).or_else(|| self.find(super::snapshot_disk::DISK_DIFF))
    }
}

/// The saved disk becomes the VM's disk (one rename, on the same file system).
fn replace_disk(saved: &Path, vm_disk: &Path) -> Result<(), OrchError> {
    std::fs::rename(saved, vm_disk).map_err(|e| OrchError::Internal(format!("replacing {}: {e}", vm_disk.display())))
}

/// A snapshot without a usable hot copy loads only from the store.
fn stored_at_all(snapshot: &Snapshot) -> Result<(), OrchError> {
    if snapshot.durable {
        return Ok(());
    }
    Err(OrchError::Corrupt {
        message: format!(
            "snapshot {} has no usable local copy and was never stored (see the reconciler's events)",
            snapshot.id
        ),
    })
}

fn no_state(snapshot: &Snapshot) -> OrchError {
    OrchError::Corrupt {
        message: format!("snapshot {} has no state artefact", snapshot.id),
    }
}
