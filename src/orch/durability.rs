//! Snapshots off the critical path. A snapshot pauses the guest only for
//! the hypervisor's own save, into its "hot copy"
//! (`$HATCH_DATA_DIR/hot/<vm>/<snapshot>/`), and the VM is `snapshotted` as
//! soon as that save is whole. Then, in the background, the hot files are checksummed and every
//! artefact (state, memory, the VM's disk as the blocks that differ from
//! its image, see `snapshot_disk`) is compressed, checksummed and put in
//! the snapshot store; only then is the snapshot `durable`.
//!
//! Restore loads the hot copy when it is still valid (the VM has not run
//! since it was taken, so its disk is the one saved) and its checksums
//! match, and otherwise the durable artefacts. A restore or deletion waits
//! for the background pass of the snapshot it touches, so the disk being
//! packed is never written meanwhile. A pass cut short (a crash, an
//! unreachable bucket) is started again by the reconciler.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::model::{Snapshot, Vm, VmState};
use crate::snapshot;
use crate::vmm::SnapshotFiles;

use super::hot_copy::{damaged_hot_file, hot_checksums, HotDamage, HOT_MEMORY, HOT_STATE};
use super::wake_hold::HOLD_LIMIT;
use super::{OrchError, Orchestrator};

/// Background passes in flight, by snapshot id.
#[derive(Default)]
pub(super) struct Passes {
    running: Mutex<HashMap<String, Pass>>,
}

struct Pass {
    stop: Arc<AtomicBool>,
    done: watch::Receiver<bool>,
}

/// Held by a running pass; dropping it tells every waiter the pass ended.
pub(super) struct PassTicket {
    snapshot_id: String,
    stop: Arc<AtomicBool>,
    _done: watch::Sender<bool>,
    passes: Arc<Passes>,
}

impl PassTicket {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Drop for PassTicket {
    fn drop(&mut self) {
        self.passes.lock().remove(&self.snapshot_id);
    }
}

impl Passes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pass>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket for a new pass over `snapshot_id`, unless one is running.
    fn begin(self: &Arc<Self>, snapshot_id: &str) -> Option<PassTicket> {
        let mut running = self.lock();
        if running.contains_key(snapshot_id) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, done) = watch::channel(false);
        running.insert(
            snapshot_id.to_string(),
            Pass {
                stop: stop.clone(),
                done,
            },
        );
        Some(PassTicket {
            snapshot_id: snapshot_id.to_string(),
            stop,
            _done: sender,
            passes: self.clone(),
        })
    }

    /// Whether a pass over `snapshot_id` runs now.
    pub(super) fn is_running(&self, snapshot_id: &str) -> bool {
        self.lock().contains_key(snapshot_id)
    }

    /// Waits until no pass over `snapshot_id` runs; with `stop`, asks the
    /// running one to end after the artefact it is packing.
    pub(super) async fn wait(&self, snapshot_id: &str, stop: bool) {
        let done = {
            let running = self.lock();
            let Some(pass) = running.get(snapshot_id) else { return };
            if stop {
                pass.stop.store(true, Ordering::Relaxed);
            }
            pass.done.clone()
        };
        let mut done = done;
        // The sender is dropped when the pass ends.
        while done.changed().await.is_ok() {}
    }
}

impl Orchestrator {
    /// Waits until no snapshot is being stored in the background (each
    /// pass finished or failed).
    pub async fn wait_for_snapshot_storage(&self) {
        loop {
            let Some(id) = self.durability.lock().keys().next().cloned() else {
                return;
            };
            self.durability.wait(&id, false).await;
        }
    }

    /// How artefacts are compressed: HATCH_SNAPSHOT_ZSTD_LEVEL on every CPU.
    pub(super) fn compression(&self) -> snapshot::Compression {
        snapshot::Compression::at_level(self.config.snapshot_zstd_level)
    }

    /// Where a VM's hot copies live.
    fn hot_root(&self, vm_id: &str) -> PathBuf {
        self.config.data_dir.join("hot").join(vm_id)
    }

    /// Where the hot copy of `snapshot_id` lives.
    pub(super) fn hot_dir(&self, vm_id: &str, snapshot_id: &str) -> PathBuf {
        self.hot_root(vm_id).join(snapshot_id)
    }

    /// Gives the files the hypervisor saved into `dir` their hot-copy names.
    pub(super) fn name_hot_files(dir: &Path, saved: &SnapshotFiles) -> Result<SnapshotFiles, OrchError> {
        let rename = |from: &Path, name: &str| -> Result<PathBuf, OrchError> {
            let to = dir.join(name);
            if from != to {
                std::fs::rename(from, &to)
                    .map_err(|e| OrchError::Internal(format!("naming {}: {e}", from.display())))?;
            }
            Ok(to)
        };
        Ok(SnapshotFiles {
            state: rename(&saved.state, HOT_STATE)?,
            memory: saved.memory.as_deref().map(|m| rename(m, HOT_MEMORY)).transpose()?,
        })
    }

    fn hot_files(dir: &Path) -> SnapshotFiles {
        let memory = dir.join(HOT_MEMORY);
        SnapshotFiles {
            state: dir.join(HOT_STATE),
            memory: memory.exists().then_some(memory),
        }
    }

    /// Starts the background pass that makes `snapshot` durable, unless one
    /// is already running for it.
    pub(super) fn make_durable_later(self: &Arc<Self>, snapshot: Snapshot) {
        let Some(ticket) = self.durability.begin(&snapshot.id) else {
            return;
        };
        let orch = self.clone();
        tokio::spawn(async move {
            let id = snapshot.id.clone();
            match orch.make_durable(snapshot, &ticket).await {
                Ok(true) => tracing::info!(snapshot = %id, "snapshot stored durably"),
                Ok(false) => tracing::info!(snapshot = %id, "storing the snapshot was cut short"),
                Err(error) => {
                    tracing::warn!(snapshot = %id, %error, "storing the snapshot failed; the reconciler tries again");
                }
            }
            drop(ticket);
        });
    }

    /// Checksums the hot files, then packs and stores every artefact.
    /// Ok(false) when stopped or when the snapshot went away meanwhile.
    async fn make_durable(&self, mut record: Snapshot, ticket: &PassTicket) -> Result<bool, OrchError> {
        let hot = self.hot_dir(&record.vm_id, &record.id);
        let files = Self::hot_files(&hot);
        if record.hot_checksums.is_empty() {
            // The first pass, right after the save: the files are as written.
            record.hot_checksums = hot_checksums(&files).await?;
        } else if let Some(HotDamage { file, found }) = damaged_hot_file(&files, &record.hot_checksums).await {
            // A later pass must not store a copy damaged since under a fresh
            // SHA-256: without its hot copy the reconciler removes the
            // snapshot, which was never stored.
            let _ = tokio::fs::remove_dir_all(&hot).await;
            return Err(OrchError::Corrupt {
                message: format!(
                    "the local copy of snapshot {} failed its checksum ({file}: {found})",
                    record.id
                ),
            });
        }
        record.artefacts.clear();
        record.total_bytes = 0;
        if !self.update_complete(&record).await? {
            return Ok(false);
        }
        // Scratch inside the hot copy: the reconciler's sweep of scratch
        // directories runs while passes do, and leaves hot copies alone.
        let work = hot.join("packing");
        let stored = self.store_artefacts(&mut record, &files, &work, ticket).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        if !matches!(stored, Ok(true)) {
            // Nothing half-stored stays behind; the next pass starts over.
            let prefix = format!("{}/{}/", record.vm_id, record.id);
            if let Err(error) = self.snapshot_store().delete(&prefix).await {
                tracing::warn!(snapshot = %record.id, %error, "removing partly stored artefacts failed");
            }
            return stored.map(|_| false);
        }
        record.durable = true;
        self.update_complete(&record).await
    }

    /// Writes a complete snapshot's record again (on a blocking thread);
    /// false when it is gone or being deleted.
    async fn update_complete(&self, record: &Snapshot) -> Result<bool, OrchError> {
        let row = record.clone();
        Ok(self
            .store
            .run(move |store| store.update_complete_snapshot(&row))
            .await?)
    }

    async fn store_artefacts(
        &self,
        record: &mut Snapshot,
        files: &SnapshotFiles,
        work: &Path,
        ticket: &PassTicket,
    ) -> Result<bool, OrchError> {
        tokio::fs::create_dir_all(work)
            .await
            .map_err(|e| OrchError::Internal(format!("creating {}: {e}", work.display())))?;
        let disk = self.layout(&record.vm_id).disk();
        let mut sources = vec![(super::snapshot::STATE, files.state.clone())];
        if let Some(memory) = &files.memory {
            sources.push((super::snapshot::MEMORY, memory.clone()));
        }
        if disk.exists() {
            sources.push((super::snapshot::DISK, disk));
        }
        for (name, source) in sources {
            if ticket.stopped() {
                return Ok(false);
            }
            let (info, packed) = if name == super::snapshot::DISK {
                self.pack_disk(&record.vm_id, &source, work).await?
            } else {
                let packed = work.join(name);
                (snapshot::pack(&source, &packed, self.compression()).await?, packed)
            };
            self.snapshot_store()
                .put(&super::snapshot::artefact_key(record, &info.name), &packed)
                .await?;
            let _ = tokio::fs::remove_file(&packed).await;
            record.total_bytes += info.compressed_bytes;
            record.artefacts.push(info);
        }
        Ok(true)
    }

    /// The hot copy of `snapshot`, checked, when `vm` may load it: the VM
    /// was suspended with it and has not run since. A copy that fails its
    /// checksum is removed (the durable artefacts are used instead).
    pub(super) async fn usable_hot_copy(&self, vm: &Vm, snapshot: &Snapshot) -> Option<SnapshotFiles> {
        let files = self.hot_copy(vm, snapshot)?;
        match damaged_hot_file(&files, &snapshot.hot_checksums).await {
            None => Some(files),
            Some(damage) => {
                self.discard_damaged_hot_copy(vm, snapshot, damage).await;
                None
            }
        }
    }

    /// The files of `snapshot`'s hot copy when `vm` may load it, before
    /// their checksums are verified.
    pub(super) fn hot_copy(&self, vm: &Vm, snapshot: &Snapshot) -> Option<SnapshotFiles> {
        self.has_hot_copy(vm, snapshot)
            .then(|| Self::hot_files(&self.hot_dir(&vm.id, &snapshot.id)))
    }

    /// A hot copy that failed its checksum is recorded as a repair of the
    /// VM and removed: the stored artefacts serve instead.
    pub(super) async fn discard_damaged_hot_copy(&self, vm: &Vm, snapshot: &Snapshot, damage: HotDamage) {
        let HotDamage { file, found } = damage;
        tracing::warn!(vm = %vm.id, snapshot = %snapshot.id, file, %found, "the hot copy is damaged; loading the stored artefacts");
        self.record_vm_repair(
            vm,
            &format!(
                "the local copy of snapshot {} failed its checksum ({file}); restored from the stored artefacts",
                snapshot.id
            ),
        )
        .await;
        let _ = tokio::fs::remove_dir_all(self.hot_dir(&vm.id, &snapshot.id)).await;
    }

    /// Whether `vm` may load the hot copy of `snapshot` (before checksums).
    pub(super) fn has_hot_copy(&self, vm: &Vm, snapshot: &Snapshot) -> bool {
        vm.snapshot_id.as_deref() == Some(snapshot.id.as_str())
            && !snapshot.hot_checksums.is_empty()
            && self.hot_dir(&vm.id, &snapshot.id).join(HOT_STATE).is_file()
    }

    /// Removes a VM's hot copies (once it runs again, they no longer match
    /// its disk), except `keep`.
    pub(super) async fn remove_hot_copies(&self, vm_id: &str, keep: Option<&str>) {
        let root = self.hot_root(vm_id);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for entry in entries.flatten() {
            if keep != Some(entry.file_name().to_string_lossy().as_ref()) {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
        // Gone once empty (a VM being deleted, or one that runs).
        let _ = tokio::fs::remove_dir(&root).await;
    }

    /// [`Self::remove_hot_copies`] once the operation holding the VM's lock
    /// (a restore) has answered, and after a wake once the waking request
    /// has (see wake_hold): unlinking the saved memory from the page cache
    /// is the slowest part of a wake besides the VMM's load, and nothing
    /// waits for it. Under the VM's lock, so no snapshot taken meanwhile
    /// loses its copy, and under the host-operation guard, so the
    /// reconciler finds it done.
    pub(super) fn remove_hot_copies_later(self: &Arc<Self>, vm_id: &str) {
        let orch = Arc::clone(self);
        let vm_id = vm_id.to_string();
        let held = self.wake_holds.take(&vm_id);
        self.operations.spawn_follow_up(async move {
            if let Some(hold) = held {
                orch.wake_holds.wait(&vm_id, hold, HOLD_LIMIT).await;
            }
            let _host = orch.host_ops.read().await;
            let _guard = orch.locks.lock(&vm_id).await;
            let keep = orch
                .viewed_vm(&vm_id)
                .filter(|vm| vm.state == VmState::Snapshotted)
                .and_then(|vm| vm.snapshot_id);
            orch.remove_hot_copies(&vm_id, keep.as_deref()).await;
        });
    }

    /// Reconciler: hot copies only a snapshotted VM's own snapshot keeps;
    /// snapshots not yet durable get their pass started again, or, when
    /// their hot copy is gone, are removed (nothing is left to store).
    pub(super) async fn reconcile_durability(self: &Arc<Self>, vms: &[Vm]) -> Result<(), OrchError> {
        for vm in vms {
            let keep = vm.snapshot_id.as_deref().filter(|_| vm.state == VmState::Snapshotted);
            self.remove_hot_copies(&vm.id, keep).await;
        }
        if let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("hot")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !vms.iter().any(|vm| vm.id == name) {
                    let _ = tokio::fs::remove_dir_all(entry.path()).await;
                }
            }
        }
        for snapshot in self.store.run(|store| store.list_local_snapshots()).await? {
            if self.hot_dir(&snapshot.vm_id, &snapshot.id).join(HOT_STATE).exists() {
                self.make_durable_later(snapshot);
                continue;
            }
            tracing::warn!(snapshot = %snapshot.id, "a snapshot lost its local copy before it was stored; removing it");
            self.discard_snapshot(&snapshot).await?;
            self.record_host_repair(&format!(
                "removed snapshot {} of VM {}: its local copy was gone before it was stored",
                snapshot.id, snapshot.vm_id
            ))
            .await;
        }
        Ok(())
    }
}
