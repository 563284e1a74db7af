//! Unpacking an artefact: verify the stored bytes first, then decompress,
//! writing only non-zero blocks so holes come back as holes.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{nonzero_runs, read_extent, read_header};
use super::{blocking, ArtefactInfo, SnapshotError};
use crate::sys::atomic_file::AtomicFile;

const CHUNK: usize = 1 << 20;

/// Checks `src` against `expected` (size and SHA-256), then restores the
/// original file at `dest` (atomically, sparse). A mismatch or a damaged
/// stream is [`SnapshotError::Corrupt`] and leaves `dest` untouched.
pub async fn unpack(src: &Path, expected: &ArtefactInfo, dest: &Path) -> Result<(), SnapshotError> {
    let (src, expected, dest) = (src.to_owned(), expected.clone(), dest.to_owned());
    blocking(move || unpack_blocking(&src, &expected, &dest)).await
}

fn unpack_blocking(src: &Path, expected: &ArtefactInfo, dest: &Path) -> Result<(), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        artefact: expected.name.clone(),
        reason,
    };
    verify(src, expected)?;

    let input = File::open(src).map_err(|e| SnapshotError::io(format!("opening {}", src.display()), e))?;
    let mut stream = zstd::Decoder::new(input).map_err(|e| corrupt(format!("not a zstd stream: {e}")))?;
    let size = read_header(&mut stream).map_err(|e| corrupt(e.to_string()))?;
    if size != expected.size_bytes {
        return Err(corrupt(format!(
            "it holds {size} bytes, the record says {}",
            expected.size_bytes
        )));
    }

    let write_err = |e: io::Error| SnapshotError::io(format!("writing {}", dest.display()), e);
    let mut out = AtomicFile::create(dest).map_err(write_err)?;
    let mut buf = vec![0u8; CHUNK];
    let mut min_offset = 0;
    while let Some((offset, length)) = read_extent(&mut stream, min_offset, size).map_err(|e| corrupt(e.to_string()))? {
        let mut done = 0u64;
        while done < length {
            let len = (length - done).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..len];
            stream
                .read_exact(chunk)
                .map_err(|e| corrupt(format!("reading data: {e}")))?;
            for (start, end) in nonzero_runs(chunk) {
                out.file()
                    .write_all_at(&chunk[start..end], offset + done + start as u64)
                    .map_err(write_err)?;
            }
            done += len as u64;
        }
        min_offset = offset + length;
    }
    // Reading to the end makes zstd check its own content checksum.
    let mut trailing = Vec::new();
    stream
        .read_to_end(&mut trailing)
        .map_err(|e| corrupt(format!("stream end: {e}")))?;
    if !trailing.is_empty() {
        return Err(corrupt(format!(
            "{} unexpected bytes after the end marker",
            trailing.len()
        )));
    }
    out.file().set_len(size).map_err(write_err)?;
    out.commit().map_err(write_err)
}

/// Streams `src` through SHA-256 and compares size and digest.
fn verify(src: &Path, expected: &ArtefactInfo) -> Result<(), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        artefact: expected.name.clone(),
        reason,
    };
    let read_err = |e: io::Error| SnapshotError::io(format!("reading {}", src.display()), e);
    let mut file = File::open(src).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len != expected.compressed_bytes {
        return Err(corrupt(format!(
            "it is {len} bytes, the record says {}",
            expected.compressed_bytes
        )));
    }
    let actual = super::digest::sha256_hex(&mut file).map_err(read_err)?;
    if !actual.eq_ignore_ascii_case(&expected.sha256) {
        return Err(corrupt(format!(
            "SHA-256 is {actual}, the record says {}",
            expected.sha256
        )));
    }
    Ok(())
}
