//! Packing a file into an artefact: only its data is read (holes are found
//! with SEEK_DATA/SEEK_HOLE), all-zero blocks are dropped, and the rest is
//! streamed through zstd while the output is hashed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::format::{nonzero_runs, write_end, write_extent, write_header};
use super::{blocking, ArtefactInfo, Compression, SnapshotError};
use crate::sys::atomic_file::AtomicFile;
use crate::sys::sparse::for_each_data_region;

const READ_CHUNK: usize = 1 << 20;

/// Compresses `src` into the artefact `dest` (written atomically) and
/// returns its sizes and SHA-256. Holes in `src` cost nothing.
pub async fn pack(src: &Path, dest: &Path, compression: Compression) -> Result<ArtefactInfo, SnapshotError> {
    let (src, dest) = (src.to_owned(), dest.to_owned());
    blocking(move || pack_blocking(&src, &dest, compression)).await
}

fn pack_blocking(src: &Path, dest: &Path, compression: Compression) -> Result<ArtefactInfo, SnapshotError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = File::open(src).map_err(|e| SnapshotError::io(format!("opening {}", src.display()), e))?;
    let size = source
        .metadata()
        .map_err(|e| SnapshotError::io(format!("reading the size of {}", src.display()), e))?
        .len();
    let packing_err = |e: io::Error| SnapshotError::io(format!("packing {} into {}", src.display(), dest.display()), e);

    let mut artefact = AtomicFile::create(dest).map_err(packing_err)?;
    let (sha256, compressed_bytes) = {
        let hashing = HashingWriter::new(BufWriter::new(artefact.file()));
        let mut encoder = compression.encoder(hashing).map_err(packing_err)?;
        write_header(&mut encoder, size).map_err(packing_err)?;
        let mut buf = vec![0u8; READ_CHUNK];
        for_each_data_region(&source, size, |start, end| {
            copy_region(&source, start, end, &mut buf, &mut encoder)
        })
        .map_err(packing_err)?;
        write_end(&mut encoder).map_err(packing_err)?;
        let hashing = encoder.finish().map_err(packing_err)?;
        hashing.finish().map_err(packing_err)?
    };
    artefact.commit().map_err(packing_err)?;
    Ok(ArtefactInfo {
        name,
        size_bytes: size,
        compressed_bytes,
        sha256,
        base: None,
    })
}

/// Reads `start..end` and writes its non-zero blocks as extents.
fn copy_region(file: &File, start: u64, end: u64, buf: &mut [u8], out: &mut impl Write) -> io::Result<()> {
    let mut offset = start;
    while offset < end {
        let len = (end - offset).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..len];
        file.read_exact_at(chunk, offset)?;
        for (run_start, run_end) in nonzero_runs(chunk) {
            write_extent(out, offset + run_start as u64, &chunk[run_start..run_end])?;
        }
        offset += len as u64;
    }
    Ok(())
}

/// Passes bytes through while hashing and counting them.
pub(super) struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Flushes and returns (hex SHA-256, byte count).
    pub(super) fn finish(mut self) -> io::Result<(String, u64)> {
        self.inner.flush()?;
        Ok((hex::encode(self.hasher.finalize()), self.bytes))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(data)?;
        self.hasher.update(&data[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
