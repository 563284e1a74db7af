//! Checksums of whole files: SHA-256 of artefacts before they are
//! unpacked; XXH3-128 of hot copies before they are loaded.
//!
//! A hot copy never leaves the host and is written through a descriptor
//! the daemon opened, so its checksum guards against damage, not forgery:
//! XXH3 reads at memory speed where SHA-256 would add a third to a
//! restore's time (docs/benchmarks.md). Stored artefacts, which may sit in
//! a shared bucket, keep SHA-256.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{blocking, SnapshotError};

const CHUNK: usize = 1 << 20;

/// Lower-case hex SHA-256 of everything `reader` yields.
pub(crate) fn sha256_hex(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

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
