//! Snapshot artefact storage, the host-side half of snapshots: packing
//! files (VM state, memory, disks) into checksummed zstd artefacts, unpacking
//! them sparse, and keeping them in a store.
//!
//! Artefact format: one zstd stream (with zstd's own content checksum) of
//! a small sparse container, see [`format`]. Holes and all-zero blocks are
//! not stored at all, so packing a mostly empty 10 GiB disk costs what its
//! data costs, and unpacking recreates the holes. The SHA-256 recorded in
//! [`ArtefactInfo`] covers the artefact bytes as stored, so corruption in
//! the store is caught before anything is decompressed.
//!
//! Stores: [`LocalStore`] (a directory under the data dir, the default)
//! and [`S3Store`] (an S3-compatible bucket, when HATCH_S3_BUCKET is set),
//! behind the one [`SnapshotStore`] trait; [`open_store`] picks by config.

mod format;
mod pack;
mod s3;
mod store;
mod unpack;

use std::io;
use std::sync::Arc;

pub use pack::pack;
pub use s3::{S3Store, PART_SIZE as S3_PART_SIZE};
pub use store::{validate_key, LocalStore, SnapshotStore};
pub use unpack::unpack;

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
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot artefact {artefact} is corrupt: {reason}")]
    Corrupt { artefact: String, reason: String },
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
        source: object_store::Error,
    },
    #[error("download of {key:?} ended after {received} of {expected} bytes")]
    Truncated { key: String, expected: u64, received: u64 },
    #[error("invalid S3 settings for bucket {bucket:?} at {endpoint} (check the HATCH_S3_* variables): {source}")]
    S3Config {
        bucket: String,
        endpoint: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "S3 bucket {bucket:?} at {endpoint} is not reachable (check HATCH_S3_ENDPOINT, HATCH_S3_BUCKET, \
         HATCH_S3_REGION, HATCH_S3_ACCESS_KEY and HATCH_S3_SECRET_KEY): {source}"
    )]
    S3Unreachable {
        bucket: String,
        endpoint: String,
        #[source]
        source: object_store::Error,
    },
}

/// The store the configuration asks for: the S3 bucket when HATCH_S3_BUCKET
/// is set (checked to be reachable), else `<data dir>/snapshots`.
pub async fn open_store(config: &crate::config::Config) -> Result<Arc<dyn SnapshotStore>, SnapshotError> {
    match &config.s3 {
        Some(s3) => {
            let store = S3Store::new(s3)?;
            store.check_reachable().await?;
            Ok(Arc::new(store))
        }
        None => Ok(Arc::new(LocalStore::under_data_dir(&config.data_dir))),
    }
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
