//! Checksums of whole hot copies: XXH3-128, checked before they are
//! loaded. (Artefacts' SHA-256 is computed as they are packed and checked
//! as they are unpacked, in the same pass.)
//!
//! A hot copy never leaves the host and is written through a descriptor
//! the daemon opened, so its checksum guards against damage, not forgery:
//! XXH3 reads at memory speed where SHA-256 would add a third to a
//! restore's time (docs/benchmarks.md). Stored artefacts, which may sit in
//! a shared bucket, keep SHA-256.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::{blocking, SnapshotError};

const CHUNK: usize = 1 << 20;

/// XXH3-128 of the file at `path` (`xxh3-128:<hex>`), read on a blocking
/// thread.
pub async fn file_checksum(path: &Path) -> Result<String, SnapshotError> {
    let path = path.to_owned();
    blocking(move || {
        let read_err = |e: io::Error| SnapshotError::io(format!("reading {}", path.display()), e);
        let mut file = File::open(&path).map_err(read_err)?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(format!("xxh3-128:{:032x}", hasher.digest128()))
    })
    .await
}
