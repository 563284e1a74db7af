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

    let mut stream = open_stream(src, &expected.name)?;
    let size = read_header(&mut stream).map_err(|e| corrupt(e.to_string()))?;
    if size != expected.size_bytes {
        return Err(corrupt(format!(
            "it holds {size} bytes, the record says {}",
            expected.size_bytes
        )));
    }

    let write_err = |e: io::Error| SnapshotError::io(format!("writing {}", dest.display()), e);
    let mut out = AtomicFile::create(dest).map_err(write_err)?;
    let file = out.file();
    read_extents(&mut stream, size, &expected.name, |offset, chunk| {
        for (start, end) in nonzero_runs(chunk) {
            file.write_all_at(&chunk[start..end], offset + start as u64)?;
        }
        Ok(())
    })
    .map_err(|e| e.into_snapshot_error(dest))?;
    out.file().set_len(size).map_err(write_err)?;
    out.commit().map_err(write_err)
}

/// The decompressed stream of the (verified) artefact at `src`.
pub(super) fn open_stream(src: &Path, artefact: &str) -> Result<impl Read, SnapshotError> {
    let input = File::open(src).map_err(|e| SnapshotError::io(format!("opening {}", src.display()), e))?;
    zstd::Decoder::new(input).map_err(|e| SnapshotError::Corrupt {
        artefact: artefact.to_string(),
        reason: format!("not a zstd stream: {e}"),
    })
}

/// Why reading a container's extents stopped.
pub(super) enum ExtentsError {
    /// The stream or the container is damaged.
    Corrupt(SnapshotError),
    /// Writing what was read failed.
    Write(io::Error),
}

impl ExtentsError {
    pub(super) fn into_snapshot_error(self, dest: &Path) -> SnapshotError {
        match self {
            ExtentsError::Corrupt(error) => error,
            ExtentsError::Write(e) => SnapshotError::io(format!("writing {}", dest.display()), e),
        }
    }
}

/// Reads the extents after a container's header, passing their data to
/// `write(offset, chunk)` in chunks of at most 1 MiB, then checks that the
/// stream ends right after the end marker (which makes zstd check its own
/// content checksum).
pub(super) fn read_extents(
    stream: &mut impl Read,
    size: u64,
    artefact: &str,
    mut write: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), ExtentsError> {
    let corrupt = |reason: String| {
        ExtentsError::Corrupt(SnapshotError::Corrupt {
            artefact: artefact.to_string(),
            reason,
        })
    };
    let mut buf = vec![0u8; CHUNK];
    let mut min_offset = 0;
    while let Some((offset, length)) = read_extent(stream, min_offset, size).map_err(|e| corrupt(e.to_string()))? {
        let mut done = 0u64;
        while done < length {
            let len = (length - done).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..len];
            stream
                .read_exact(chunk)
                .map_err(|e| corrupt(format!("reading data: {e}")))?;
            write(offset + done, chunk).map_err(ExtentsError::Write)?;
            done += len as u64;
        }
        min_offset = offset + length;
    }
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
    Ok(())
}

/// Streams `src` through SHA-256 and compares size and digest.
pub(super) fn verify(src: &Path, expected: &ArtefactInfo) -> Result<(), SnapshotError> {
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
