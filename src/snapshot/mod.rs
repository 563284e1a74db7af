//! Snapshot artefact storage, the host-side half of snapshots: packing
//! files (VM state, memory, disks) into checksummed zstd artefacts, unpacking
//! them sparse, and keeping them in a store.
//!
//! Artefact format: one zstd stream (with zstd's own content checksum) of
//! a small sparse container, see [`format`], compressed on every CPU at the
//! configured level ([`Compression`]). Holes and all-zero blocks are not
//! stored at all, so packing a mostly empty 10 GiB disk costs what its
//! data costs, and unpacking recreates the holes. The SHA-256 recorded in
//! [`ArtefactInfo`] covers the artefact bytes as stored; unpacking streams
//! them from the store through the hash and zstd in one pass, and the
//! unpacked file takes its name only once the hash matched, so a corrupt
//! artefact is never loaded.
//!
//! A VM's disk is stored as the blocks that differ from its image's root
//! filesystem, see [`disk_diff`].
//!
//! Stores: [`LocalStore`] (a directory under the data dir, the default)
//! and [`S3Store`] (an S3-compatible bucket, when HATCH_S3_BUCKET is set,
//! with this host's objects under HATCH_S3_PREFIX or its [`host_id`]),
//! behind the one [`SnapshotStore`] trait; [`open_store`] picks by config.

mod compression;
mod digest;
mod disk_diff;
mod format;
mod host_id;
mod pack;
mod s3;
mod store;
mod stream;
mod unpack;

use std::io;
use std::sync::Arc;

pub use compression::{all_cpus, Compression};
pub use digest::file_checksum;
pub use disk_diff::{check_disk_base, pack_disk_diff, unpack_disk_diff, DiskBase, BLOCK as DISK_DIFF_BLOCK};
pub use host_id::{host_id, host_id_path, read_host_id};
pub use pack::pack;
pub use s3::{S3Store, PART_SIZE as S3_PART_SIZE};
pub use store::{is_orphan, validate_key, LocalStore, ObjectReader, SnapshotStore, StorageHealth};
pub use stream::stream_to;
pub use unpack::{unpack, unpack_from, Keep};

/// What was recorded about one packed artefact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtefactInfo {
    /// The artefact's file name (e.g. `disk.zst`).
    pub name: String,
    /// Logical size of the original file (holes included).
    pub size_bytes: u64,
    /// Size of the artefact as stored.
    pub compressed_bytes: u64,
    /// SHA-256 of the artefact as stored, lower-case hex.
    pub sha256: String,
    /// For a disk stored as its differences from an image's root
    /// filesystem: that base, which a restore needs unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DiskBase>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot artefact {artefact} is corrupt: {reason}")]
    Corrupt { artefact: String, reason: String },
    #[error(
        "the snapshot's disk is stored as its differences from the root filesystem of image {image_id}, \
         which {reason}; restoring it over another base would corrupt the disk"
    )]
    BaseChanged { image_id: String, reason: String },
    #[error("no space left on the device while {context}")]
    NoSpace { context: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("snapshot object {key:?} not found")]
    NotFound { key: String },
    #[error("invalid snapshot object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("snapshot worker task failed: {0}")]
    Task(String),
    #[error("object storage {op} of {key:?} in bucket {bucket:?} failed: {source}")]
    ObjectStore {
        op: &'static str,
        bucket: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("download of {key:?} ended after {received} of {expected} bytes")]
    Truncated { key: String, expected: u64, received: u64 },
    #[error("invalid S3 settings for bucket {bucket:?} at {endpoint} (check the HATCH_S3_* variables): {source}")]
    S3Config {
        bucket: String,
        endpoint: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "S3 bucket {bucket:?} at {endpoint} is not reachable, so snapshot storage is unavailable \
         (check HATCH_S3_ENDPOINT, HATCH_S3_BUCKET, HATCH_S3_REGION, HATCH_S3_ACCESS_KEY and \
         HATCH_S3_SECRET_KEY): {source}"
    )]
    S3Unreachable {
        bucket: String,
        endpoint: String,
        #[source]
        source: Box<object_store::Error>,
    },
}

/// The store the configuration asks for: the S3 bucket when HATCH_S3_BUCKET
/// is set, else `<data dir>/snapshots`. A bucket that does not answer does
/// not stop the daemon: it is logged, and snapshots and restores are
/// refused (503) until it answers. Invalid S3 settings, or a host id that
/// cannot be made, are errors.
pub async fn open_store(config: &crate::config::Config) -> Result<Arc<dyn SnapshotStore>, SnapshotError> {
    match &config.s3 {
        Some(s3) => {
            let prefix = match &s3.prefix {
                Some(prefix) => prefix.clone(),
                None => {
                    let data_dir = config.data_dir.clone();
                    blocking(move || host_id(&data_dir)).await?
                }
            };
            let store = S3Store::new(s3, &prefix)?;
            if let Err(error) = store.check_reachable().await {
                tracing::warn!(
                    %error,
                    "starting without snapshot storage: snapshots and restores answer 503 until the bucket answers"
                );
            }
            Ok(Arc::new(store))
        }
        None => Ok(Arc::new(LocalStore::under_data_dir(&config.data_dir))),
    }
}

/// For `hatch doctor`: where snapshots would go and whether that works
/// now, without making anything (no host id is written).
pub async fn check_store(config: &crate::config::Config) -> Result<String, SnapshotError> {
    let Some(s3) = &config.s3 else {
        return Ok(LocalStore::under_data_dir(&config.data_dir).describe());
    };
    let prefix = match &s3.prefix {
        Some(prefix) => Some(prefix.clone()),
        None => {
            let data_dir = config.data_dir.clone();
            blocking(move || read_host_id(&data_dir)).await?
        }
    };
    // Any valid prefix proves the bucket answers; the host id is made at the first start.
    let store = S3Store::new(s3, prefix.as_deref().unwrap_or("host-id-not-yet-made"))?;
    store.check_reachable().await?;
    Ok(match prefix {
        Some(_) => store.describe(),
        None => format!(
            "S3 bucket {} answers; this host's objects will go under the host id made at its first start",
            store.bucket()
        ),
    })
}

impl SnapshotError {
    /// Wraps an I/O error, telling a full disk apart from other failures
    /// so callers can report it as such.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> SnapshotError {
        let context = context.into();
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            SnapshotError::NoSpace { context }
        } else {
            SnapshotError::Io { context, source }
        }
    }
}

/// Runs blocking file work off the async runtime.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, SnapshotError>
where
    F: FnOnce() -> Result<T, SnapshotError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SnapshotError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_reported_as_such() {
        let full = SnapshotError::io("writing x", io::Error::from_raw_os_error(nix::libc::ENOSPC));
        assert!(matches!(full, SnapshotError::NoSpace { .. }));
        let other = SnapshotError::io("writing x", io::Error::from_raw_os_error(nix::libc::EIO));
        assert!(matches!(other, SnapshotError::Io { .. }));
    }
}
