//! A snapshot's hot copy: the hypervisor's files as it saved them, kept
//! uncompressed beside the VM while it sleeps so that a restore loads them
//! without unpacking anything. Their checksums are taken once, by the
//! background pass that stores the snapshot, and every later use checks
//! them: a restore verifies them while the VMM loads the files, and the
//! guest resumes only once they match.

use std::collections::BTreeMap;

use crate::snapshot::{self, SnapshotError};
use crate::vmm::{Hypervisor, SnapshotFiles, VmHandle, VmLaunch};

use super::stream_restore::{kill, resume_verified};
use super::OrchError;

/// The hot copy's files are named like the artefacts they become. This is
/// the VMM's state file (QEMU's migration stream, Firecracker's vmstate),
/// also its key in the recorded checksums.
pub const HOT_STATE: &str = "state";
/// The hot copy's name for Firecracker's guest memory file.
pub const HOT_MEMORY: &str = "memory";

/// The checksum of every file of a hot copy, by its hot name.
pub async fn hot_checksums(files: &SnapshotFiles) -> Result<BTreeMap<String, String>, SnapshotError> {
    let mut sums = BTreeMap::new();
    sums.insert(HOT_STATE.to_string(), snapshot::file_checksum(&files.state).await?);
    if let Some(memory) = &files.memory {
        sums.insert(HOT_MEMORY.to_string(), snapshot::file_checksum(memory).await?);
    }
    Ok(sums)
}

/// A hot file whose checksum is not the one recorded, or that cannot be
/// read.
#[derive(Debug)]
pub struct HotDamage {
    pub file: &'static str,
    /// The checksum found instead, or why the file could not be read.
    pub found: String,
}

/// The first hot file whose checksum is not the one recorded in `sums`.
pub(super) async fn damaged_hot_file(files: &SnapshotFiles, sums: &BTreeMap<String, String>) -> Option<HotDamage> {
    for (file, path) in [(HOT_STATE, Some(&files.state)), (HOT_MEMORY, files.memory.as_ref())] {
        let (Some(path), Some(expected)) = (path, sums.get(file)) else {
            continue;
        };
        let found = match snapshot::file_checksum(path).await {
            Ok(actual) if actual == *expected => continue,
            Ok(actual) => actual,
            Err(error) => error.to_string(),
        };
        return Some(HotDamage { file, found });
    }
    None
}

/// Loads a hot copy's `files` into a fresh VMM for `spec` while their
/// checksums (`sums`, as [`hot_checksums`] made them) are verified beside
/// the load, which then costs the restore nothing on a host with a core to
/// spare; the guest resumes only once they match. A damaged copy stops the
/// VMM before its guest ever ran: `Ok(Err(damage))`.
pub async fn restore_hot(
    hypervisor: &dyn Hypervisor,
    spec: &VmLaunch,
    files: &SnapshotFiles,
    sums: &BTreeMap<String, String>,
) -> Result<Result<Box<dyn VmHandle>, HotDamage>, OrchError> {
    let (damage, loaded) = tokio::join!(damaged_hot_file(files, sums), hypervisor.restore_paused(spec, files));
    match damage {
        None => Ok(Ok(resume_verified(loaded?).await?)),
        Some(damage) => {
            if let Ok(handle) = loaded {
                kill(handle.as_ref()).await;
            }
            Ok(Err(damage))
        }
    }
}
