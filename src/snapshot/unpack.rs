//! Unpacking an artefact in one pass: the stored bytes are read once,
//! hashed as they go through zstd, and the decompressed data is written
//! (only its non-zero blocks, so holes come back as holes) to a temporary
//! file that takes the destination's name only once the whole artefact's
//! size and SHA-256 have matched the record. A damaged artefact therefore
//! never becomes a file anyone loads, and no compressed copy is kept.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::format::{nonzero_runs, read_extent, read_header};
use super::{blocking, ArtefactInfo, ObjectReader, SnapshotError};
use crate::sys::atomic_file::AtomicFile;

pub(super) const CHUNK: usize = 1 << 20;

/// What becomes of an unpacked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// It outlives the restore (a VM's disk): synced before it takes its
    /// name.
    Durable,
    /// Read once by the hypervisor and deleted right after (state,
    /// memory): not synced, as a crash loses nothing anyone needs.
    Scratch,
}

/// Unpacks the artefact file `src` at `dest` (atomically, sparse, synced);
/// see [`unpack_from`].
pub async fn unpack(src: &Path, expected: &ArtefactInfo, dest: &Path) -> Result<(), SnapshotError> {
    let input = File::open(src).map_err(|e| SnapshotError::io(format!("opening {}", src.display()), e))?;
    unpack_from(Box::new(input), expected, dest, Keep::Durable).await
}

/// Reads an artefact from `source` (a store's object) and restores the
/// original file at `dest`. The artefact is checked against `expected`
/// (size and SHA-256) as it is read; a mismatch or a damaged stream is
/// [`SnapshotError::Corrupt`] and leaves `dest` untouched.
pub async fn unpack_from(
    source: ObjectReader,
    expected: &ArtefactInfo,
    dest: &Path,
    keep: Keep,
) -> Result<(), SnapshotError> {
    let (expected, dest) = (expected.clone(), dest.to_owned());
    blocking(move || unpack_blocking(source, &expected, &dest, keep)).await
}

fn unpack_blocking(source: impl Read, expected: &ArtefactInfo, dest: &Path, keep: Keep) -> Result<(), SnapshotError> {
    let write_err = |e: io::Error| SnapshotError::io(format!("writing {}", dest.display()), e);
    let out = decode_verified(source, expected, |stream| {
        let size = read_checked_header(stream, expected)?;
        let mut out = AtomicFile::create(dest).map_err(write_err)?;
        let file = out.file();
        read_extents(stream, size, &expected.name, |offset, chunk| {
            for (start, end) in nonzero_runs(chunk) {
                file.write_all_at(&chunk[start..end], offset + start as u64)?;
            }
            Ok(())
        })
        .map_err(|e| e.into_snapshot_error(dest.display()))?;
        out.file().set_len(size).map_err(write_err)?;
        Ok(out)
    })?;
    commit(out, keep).map_err(write_err)
}

/// Gives an unpacked file its name, synced or not as `keep` says.
pub(super) fn commit(out: AtomicFile, keep: Keep) -> io::Result<()> {
    match keep {
        Keep::Durable => out.commit(),
        Keep::Scratch => out.commit_unsynced(),
    }
}

fn corrupt(expected: &ArtefactInfo, reason: String) -> SnapshotError {
    SnapshotError::Corrupt {
        artefact: expected.name.clone(),
        reason,
    }
}

/// The container's header, whose logical size must be the record's.
pub(super) fn read_checked_header(stream: &mut dyn Read, expected: &ArtefactInfo) -> Result<u64, SnapshotError> {
    let size = read_header(stream).map_err(|e| corrupt(expected, e.to_string()))?;
    if size != expected.size_bytes {
        return Err(corrupt(
            expected,
            format!("it holds {size} bytes, the record says {}", expected.size_bytes),
        ));
    }
    Ok(size)
}

/// Runs `decode` over the decompressed stream of `source` while hashing
/// the stored bytes, then checks all of them against `expected`: its
/// result is returned only when the size and SHA-256 match too. When they
/// do not, that is the error reported, whatever `decode` made of the
/// damaged bytes (the rest of the artefact is read to tell).
pub(super) fn decode_verified<T>(
    source: impl Read,
    expected: &ArtefactInfo,
    decode: impl FnOnce(&mut dyn Read) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    let mut input = Verifying::new(source, expected.compressed_bytes);
    let decoded = match zstd::Decoder::new(&mut input) {
        Ok(mut stream) => decode(&mut stream),
        Err(e) => Err(corrupt(expected, format!("not a zstd stream: {e}"))),
    };
    match decoded {
        // A write failed (a full disk): nothing to learn from the rest.
        Err(error) if !matches!(error, SnapshotError::Corrupt { .. }) => Err(error),
        decoded => {
            input.finish(expected)?;
            decoded
        }
    }
}

/// Passes the stored bytes through, hashing and counting them, and never
/// more than the record's size (a longer artefact is corrupt: no need to
/// read all of it).
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
    /// More bytes than `limit` were there.
    too_long: bool,
    /// Reading the store failed (not the artefact's fault).
    failed: Option<io::Error>,
}

impl<R: Read> Verifying<R> {
    fn new(inner: R, limit: u64) -> Self {
        Verifying {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            limit,
            too_long: false,
            failed: None,
        }
    }

    /// Reads what is left and compares size and digest with `expected`.
    fn finish(mut self, expected: &ArtefactInfo) -> Result<(), SnapshotError> {
        let mut sink = vec![0u8; CHUNK];
        while !self.too_long && self.failed.is_none() && self.read(&mut sink).is_ok_and(|n| n > 0) {}
        if let Some(source) = self.failed {
            return Err(SnapshotError::io(
                format!("reading snapshot artefact {}", expected.name),
                source,
            ));
        }
        if self.too_long || self.bytes != expected.compressed_bytes {
            let found = match self.too_long {
                true => format!("more than {}", self.bytes),
                false => self.bytes.to_string(),
            };
            return Err(corrupt(
                expected,
                format!("it is {found} bytes, the record says {}", expected.compressed_bytes),
            ));
        }
        let actual = hex::encode(self.hasher.finalize());
        if !actual.eq_ignore_ascii_case(&expected.sha256) {
            return Err(corrupt(
                expected,
                format!("SHA-256 is {actual}, the record says {}", expected.sha256),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.too_long {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let kind = e.kind();
                self.failed = Some(e);
                return Err(io::Error::new(kind, "reading the stored artefact failed"));
            }
        };
        if self.bytes + n as u64 > self.limit {
            // Ends the stream here: the digest cannot match anyway.
            self.too_long = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Why reading a container's extents stopped.
pub(super) enum ExtentsError {
    /// The stream or the container is damaged.
    Corrupt(SnapshotError),
    /// Writing what was read failed.
    Write(io::Error),
}

impl ExtentsError {
    pub(super) fn into_snapshot_error(self, dest: impl std::fmt::Display) -> SnapshotError {
        match self {
            ExtentsError::Corrupt(error) => error,
            ExtentsError::Write(e) => SnapshotError::io(format!("writing {dest}"), e),
        }
    }
}

/// Reads the extents after a container's header, passing their data to
/// `write(offset, chunk)` in chunks of at most 1 MiB, then checks that the
/// stream ends right after the end marker (which makes zstd check its own
/// content checksum).
pub(super) fn read_extents(
    stream: &mut (impl Read + ?Sized),
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
