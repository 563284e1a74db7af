//! A VM's disk stored as the blocks that differ from its image's root
//! filesystem (the "base"): a disk cloned from a 2 GiB image, in which
//! the guest wrote a few files, costs those files' blocks, not the image.
//!
//! Both files are compared in [`BLOCK`]-sized blocks, over only the blocks
//! either of them has data in (SEEK_DATA), and every disk block that
//! differs is stored whole (a block the guest zeroed is stored as zeros,
//! which zstd makes nearly free, and comes back as a hole). The container
//! is the sparse one of [`super::format`] with a diff header that names
//! the base by size and digest; restore clones the base (a reflink where
//! possible, see [`crate::sys::clone_file`]) and writes the blocks over it.
//!
//! The base digest is a SHA-256 of the base's content: its size, then the
//! index and bytes of each non-zero block, so it does not depend on where
//! the file system keeps holes. A restore first checks the base against the
//! recorded digest and refuses ([`SnapshotError::BaseChanged`]) an image
//! that is gone or changed: a diff over another base would be a corrupt
//! disk. Images never change in place, so a digest is computed once per
//! file version (device, inode, size, mtime, ctime) and kept in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::format::{nonzero_runs, read_diff_header, write_diff_header, write_end, write_extent, DiffHeader};
use super::pack::HashingWriter;
use super::unpack::{decode_verified, read_extents};
use super::{blocking, ArtefactInfo, Compression, ObjectReader, SnapshotError};
use crate::sys::atomic_file::AtomicFile;
use crate::sys::clone_file::clone_into;
use crate::sys::sparse::{data_regions, is_zero};

/// Granularity of the comparison: small enough that a few changed files
/// cost little, large enough that the block index stays small.
pub const BLOCK: u64 = 64 * 1024;
/// Blocks read per call.
const BLOCKS_PER_READ: u64 = 16;
const DIGEST_DOMAIN: &[u8] = b"hatch disk base v1";

/// What a disk diff was taken against (recorded with its artefact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskBase {
    /// The image whose root filesystem is the base.
    pub image_id: String,
    /// The base's logical size.
    pub size_bytes: u64,
    /// The base's content digest (see the module documentation), hex.
    pub sha256: String,
}

/// Packs the blocks of `disk` that differ from `base` (the root filesystem
/// of image `image_id`) into the artefact `dest`, written atomically.
pub async fn pack_disk_diff(
    disk: &Path,
    base: &Path,
    image_id: &str,
    dest: &Path,
    compression: Compression,
) -> Result<ArtefactInfo, SnapshotError> {
    let (disk, base, image_id, dest) = (disk.to_owned(), base.to_owned(), image_id.to_owned(), dest.to_owned());
    blocking(move || pack_blocking(&disk, &base, &image_id, &dest, compression)).await
}

/// Checks that `base` is still the file `expected` describes.
pub async fn check_disk_base(base: &Path, expected: &DiskBase) -> Result<(), SnapshotError> {
    let (base, expected) = (base.to_owned(), expected.clone());
    blocking(move || check_base(&base, &expected).map(|_| ())).await
}

/// Checks `base`, then reads the artefact from `source` and writes the
/// disk it describes at `dest` (atomically, synced): a clone of `base`
/// with the stored blocks written over it. The artefact is checked against
/// `expected` as it is read; `dest` takes its name only once it matched.
pub async fn unpack_disk_diff(
    source: ObjectReader,
    expected: &ArtefactInfo,
    base: &Path,
    dest: &Path,
) -> Result<(), SnapshotError> {
    let (expected, base, dest) = (expected.clone(), base.to_owned(), dest.to_owned());
    blocking(move || unpack_blocking(source, &expected, &base, &dest)).await
}

fn pack_blocking(
    disk_path: &Path,
    base_path: &Path,
    image_id: &str,
    dest: &Path,
    compression: Compression,
) -> Result<ArtefactInfo, SnapshotError> {
    let (base_size, base_digest) = base_digest(base_path)
        .map_err(|e| SnapshotError::io(format!("reading the base {}", base_path.display()), e))?;
    let packing_err =
        |e: io::Error| SnapshotError::io(format!("packing {} into {}", disk_path.display(), dest.display()), e);
    let disk = File::open(disk_path).map_err(packing_err)?;
    let base = File::open(base_path).map_err(packing_err)?;
    let size = disk.metadata().map_err(packing_err)?.len();
    let header = DiffHeader {
        size,
        base_size,
        base_digest,
    };

    let mut artefact = AtomicFile::create(dest).map_err(packing_err)?;
    let (sha256, compressed_bytes) = {
        let hashing = HashingWriter::new(BufWriter::new(artefact.file()));
        let mut encoder = compression.encoder(hashing).map_err(packing_err)?;
        write_diff_header(&mut encoder, &header).map_err(packing_err)?;
        let (_, seen) = walk(&base, Some((&disk, size)), |offset, block| {
            write_extent(&mut encoder, offset, block)
        })
        .map_err(packing_err)?;
        if seen != base_digest {
            // Changed while it was read: compared against neither version.
            return Err(packing_err(io::Error::other(format!(
                "the base {} changed during the comparison",
                base_path.display()
            ))));
        }
        write_end(&mut encoder).map_err(packing_err)?;
        encoder.finish().map_err(packing_err)?.finish().map_err(packing_err)?
    };
    artefact.commit().map_err(packing_err)?;
    Ok(ArtefactInfo {
        name: dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size_bytes: size,
        compressed_bytes,
        sha256,
        base: Some(DiskBase {
            image_id: image_id.to_string(),
            size_bytes: base_size,
            sha256: hex::encode(base_digest),
        }),
    })
}

fn unpack_blocking(
    source: ObjectReader,
    expected: &ArtefactInfo,
    base_path: &Path,
    dest: &Path,
) -> Result<(), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        artefact: expected.name.clone(),
        reason,
    };
    let recorded = expected
        .base
        .as_ref()
        .ok_or_else(|| corrupt("the record names no base image".into()))?;
    let stamp = check_base(base_path, recorded)?;
    let write_err = |e: io::Error| SnapshotError::io(format!("writing {}", dest.display()), e);
    let out = decode_verified(source, expected, |stream| {
        let header = read_diff_header(stream).map_err(|e| corrupt(e.to_string()))?;
        if header.size != expected.size_bytes
            || header.base_size != recorded.size_bytes
            || hex::encode(header.base_digest) != recorded.sha256
        {
            return Err(corrupt(format!(
                "its header ({header:?}) does not match the record ({} bytes over {recorded:?})",
                expected.size_bytes
            )));
        }
        let base =
            File::open(base_path).map_err(|e| SnapshotError::io(format!("opening {}", base_path.display()), e))?;
        let mut out = AtomicFile::create(dest).map_err(write_err)?;
        clone_into(&base, out.file()).map_err(write_err)?;
        if Stamp::of(&base).ok() != Some(stamp) {
            return Err(base_changed(recorded, "changed while it was being copied".into()));
        }
        out.file().set_len(header.size).map_err(write_err)?;
        let file = out.file();
        read_extents(stream, header.size, &expected.name, |offset, block| {
            overwrite(file, offset, block)
        })
        .map_err(|e| e.into_snapshot_error(dest.display()))?;
        Ok(out)
    })?;
    out.commit().map_err(write_err)
}

/// Writes `data` at `offset`, punching holes where it is all zeros (the
/// guest discarded or zeroed what the base had there).
fn overwrite(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut written = 0;
    for (start, end) in nonzero_runs(data).into_iter().chain([(data.len(), data.len())]) {
        if start > written {
            zero_range(file, offset + written as u64, (start - written) as u64)?;
        }
        file.write_all_at(&data[start..end], offset + start as u64)?;
        written = end;
    }
    Ok(())
}

fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(file.as_raw_fd(), punch, offset as i64, len as i64) {
        Ok(()) => Ok(()),
        Err(Errno::EOPNOTSUPP) => file.write_all_at(&vec![0u8; len as usize], offset),
        Err(e) => Err(e.into()),
    }
}

fn base_changed(base: &DiskBase, reason: String) -> SnapshotError {
    SnapshotError::BaseChanged {
        image_id: base.image_id.clone(),
        reason,
    }
}

/// The base's stamp when it matches `expected`, else why not.
fn check_base(path: &Path, expected: &DiskBase) -> Result<Stamp, SnapshotError> {
    if !path.exists() {
        return Err(base_changed(
            expected,
            format!("is missing ({} does not exist)", path.display()),
        ));
    }
    let file = File::open(path).map_err(|e| SnapshotError::io(format!("opening {}", path.display()), e))?;
    let stamp = Stamp::of(&file).map_err(|e| SnapshotError::io(format!("reading {}", path.display()), e))?;
    let (size, digest) = base_digest(path).map_err(|e| SnapshotError::io(format!("reading {}", path.display()), e))?;
    if size != expected.size_bytes || hex::encode(digest) != expected.sha256 {
        return Err(base_changed(
            expected,
            format!(
                "has changed since the snapshot ({}: {size} bytes, digest {}; the snapshot was taken over {} bytes, digest {})",
                path.display(),
                hex::encode(digest),
                expected.size_bytes,
                expected.sha256
            ),
        ));
    }
    Ok(stamp)
}

/// One version of a file: what changes whenever its content does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(file: &File) -> io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

type Digests = HashMap<PathBuf, (Stamp, [u8; 32])>;
static DIGESTS: LazyLock<Mutex<Digests>> = LazyLock::new(Default::default);

/// (size, content digest) of the base at `path`, computed once per version.
fn base_digest(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let file = File::open(path)?;
    let before = Stamp::of(&file)?;
    let cached = DIGESTS.lock().unwrap_or_else(|e| e.into_inner()).get(path).copied();
    if let Some((stamp, digest)) = cached.filter(|(stamp, _)| *stamp == before) {
        return Ok((stamp.size, digest));
    }
    let (size, digest) = walk(&file, None, |_, _| Ok(()))?;
    if Stamp::of(&file)? == before {
        DIGESTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (before, digest));
    }
    Ok((size, digest))
}

/// Reads `base` (and `disk`, when given) over every block either has data
/// in; returns the base's (size, digest) and passes each disk block that
/// differs from the base to `differs(offset, bytes)`, in order.
fn walk(
    base: &File,
    disk: Option<(&File, u64)>,
    mut differs: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<(u64, [u8; 32])> {
    let base_size = base.metadata()?.len();
    let mut regions = data_regions(base, base_size)?;
    if let Some((disk, size)) = disk {
        regions.extend(data_regions(disk, size)?);
    }
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_DOMAIN);
    hasher.update(base_size.to_le_bytes());
    let span = (BLOCK * BLOCKS_PER_READ) as usize;
    let (mut base_buf, mut disk_buf) = (vec![0u8; span], vec![0u8; span]);
    for (first, end) in block_ranges(regions) {
        let mut index = first;
        while index < end {
            let count = (end - index).min(BLOCKS_PER_READ);
            let offset = index * BLOCK;
            let len = (count * BLOCK) as usize;
            let base_len = read_clipped(base, base_size, offset, &mut base_buf[..len])?;
            let disk_len = match disk {
                Some((disk, size)) => read_clipped(disk, size, offset, &mut disk_buf[..len])?,
                None => 0,
            };
            for i in 0..count as usize {
                let at = i * BLOCK as usize;
                let block_index = index + i as u64;
                let base_block = &base_buf[at..at + BLOCK as usize];
                let base_valid = base_len.saturating_sub(at).min(BLOCK as usize);
                if base_valid > 0 && !is_zero(&base_block[..base_valid]) {
                    hasher.update(block_index.to_le_bytes());
                    hasher.update(&base_block[..base_valid]);
                }
                // Past the base's end, the (zero-filled) buffer reads as the
                // zeros a restore's clone extended to the disk's size has.
                let disk_valid = disk_len.saturating_sub(at).min(BLOCK as usize);
                let disk_block = &disk_buf[at..at + disk_valid];
                if disk_valid > 0 && disk_block != &base_block[..disk_valid] {
                    differs(block_index * BLOCK, disk_block)?;
                }
            }
            index += count;
        }
    }
    Ok((base_size, hasher.finalize().into()))
}

/// Fills `buf` from `offset`, up to the file's `size`; the rest of `buf`
/// is zeroed. Returns how many bytes were in the file.
fn read_clipped(file: &File, size: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let len = size.saturating_sub(offset).min(buf.len() as u64) as usize;
    file.read_exact_at(&mut buf[..len], offset)?;
    buf[len..].fill(0);
    Ok(len)
}

/// The byte ranges as sorted, merged ranges of [`BLOCK`] indices that
/// cover them.
fn block_ranges(mut regions: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    regions.sort_unstable();
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    for (start, end) in regions {
        let (first, last) = (start / BLOCK, end.div_ceil(BLOCK));
        match blocks.last_mut() {
            Some((_, prev_end)) if first <= *prev_end => *prev_end = (*prev_end).max(last),
            _ => blocks.push((first, last)),
        }
    }
    blocks
}

#[cfg(test)]
#[path = "disk_diff_tests.rs"]
mod tests;
