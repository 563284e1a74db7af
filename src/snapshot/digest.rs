//! SHA-256 of whole files: artefacts before they are unpacked, hot copies
//! before they are loaded.

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

/// SHA-256 of the file at `path`, read on a blocking thread.
pub async fn file_sha256(path: &Path) -> Result<String, SnapshotError> {
    let path = path.to_owned();
    blocking(move || {
        let read_err = |e: io::Error| SnapshotError::io(format!("reading {}", path.display()), e);
        let mut file = File::open(&path).map_err(read_err)?;
        sha256_hex(&mut file).map_err(read_err)
    })
    .await
}
