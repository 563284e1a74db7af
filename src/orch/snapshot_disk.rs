//! The VM's disk in a snapshot's stored artefacts: the blocks that differ
//! from its image's root filesystem (`disk-diff.zst`, see
//! `snapshot::disk_diff`), or the whole disk, sparse (`disk.zst`), when the
//! image has no root filesystem on this host to compare with.
//!
//! A local restore from the hot copy never touches the disk: the VM has not
//! run since the snapshot, so its disk in place is the one saved. Only a
//! restore from the stored artefacts rebuilds it, from the base and the
//! stored blocks, and that needs the base as it was: an image that is gone
//! or changed is refused (409 naming the image) before anything is fetched,
//! and the VM stays `snapshotted` with its disk untouched.

use std::path::{Path, PathBuf};

use crate::snapshot::{self, ArtefactInfo, DiskBase, Keep, ObjectReader, SnapshotError};

use super::{OrchError, Orchestrator};

pub(super) const DISK_DIFF: &str = "disk-diff.zst";

impl Orchestrator {
    /// Packs VM `vm_id`'s `disk` into `work`; returns the artefact and
    /// where it was written.
    pub(super) async fn pack_disk(
        &self,
        vm_id: &str,
        disk: &Path,
        work: &Path,
    ) -> Result<(ArtefactInfo, PathBuf), OrchError> {
        let image = match self.stored_vm(vm_id).await? {
            Some(vm) => self.stored_image(&vm.image_id).await?,
            None => None,
        };
        let base = image.and_then(|image| Some((image.rootfs_path.filter(|p| p.is_file())?, image.id)));
        Ok(match base {
            Some((rootfs, image_id)) => {
                let packed = work.join(DISK_DIFF);
                (
                    snapshot::pack_disk_diff(disk, &rootfs, &image_id, &packed, self.compression()).await?,
                    packed,
                )
            }
            None => {
                let packed = work.join(super::snapshot::DISK);
                (snapshot::pack(disk, &packed, self.compression()).await?, packed)
            }
        })
    }

    /// The root filesystem a disk diff was taken over, checked to be as it
    /// was then.
    pub(super) async fn disk_base(&self, base: &DiskBase) -> Result<PathBuf, OrchError> {
        let gone = |reason: &str| SnapshotError::BaseChanged {
            image_id: base.image_id.clone(),
            reason: reason.to_string(),
        };
        let image = self
            .stored_image(&base.image_id)
            .await?
            .ok_or_else(|| gone("was deleted"))?;
        let rootfs = image
            .rootfs_path
            .ok_or_else(|| gone("no longer has a root filesystem"))?;
        snapshot::check_disk_base(&rootfs, base).await?;
        Ok(rootfs)
    }

    /// Restores the artefact read from `packed` at `plain`, checked as it
    /// is read: a disk diff over `base`, anything else as it was packed.
    /// Only the disk outlives the restore, so only the disk is synced.
    pub(super) async fn unpack_artefact(
        &self,
        packed: ObjectReader,
        info: &ArtefactInfo,
        base: Option<&Path>,
        plain: &Path,
    ) -> Result<(), OrchError> {
        let keep = match info.name.as_str() {
            super::snapshot::DISK => Keep::Durable,
            _ => Keep::Scratch,
        };
        match base.filter(|_| info.base.is_some()) {
            Some(rootfs) => snapshot::unpack_disk_diff(packed, info, rootfs, plain).await?,
            None => snapshot::unpack_from(packed, info, plain, keep).await?,
        }
        Ok(())
    }
}
