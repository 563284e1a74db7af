//! Copies of disk images that cost what the file system allows: a reflink
//! (`FICLONE`: shared extents, no data copied) on btrfs, XFS and others
//! that support it; elsewhere (ext4, tmpfs) a copy of the data extents
//! only, found with SEEK_DATA/SEEK_HOLE and copied in the kernel with
//! `copy_file_range`. Holes stay holes and no byte passes through user
//! space unless the kernel refuses both.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;

use super::sparse::for_each_data_region;

/// How a copy was made (reported, e.g., by the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// `FICLONE`: the copy shares the source's extents until written.
    Reflink,
    /// Data extents copied with `copy_file_range` (or read and written when
    /// the kernel cannot), holes skipped.
    SparseCopy,
}

impl CloneMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CloneMethod::Reflink => "reflink",
            CloneMethod::SparseCopy => "sparse copy",
        }
    }
}

/// Makes `dest`, which must not exist, a copy of `src`. On failure `dest`
/// is removed.
pub fn clone_file(src: &Path, dest: &Path) -> io::Result<CloneMethod> {
    let source = File::open(src)?;
    let target = OpenOptions::new().write(true).create_new(true).open(dest)?;
    let cloned = clone_into(&source, &target);
    if cloned.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    cloned
}

/// Makes the empty file `dest` a copy of `src` (same length, same holes).
pub fn clone_into(src: &File, dest: &File) -> io::Result<CloneMethod> {
    // SAFETY: FICLONE reads one int argument (the source descriptor) and
    // touches no memory of ours.
    let reflinked = unsafe { nix::libc::ioctl(dest.as_raw_fd(), nix::libc::FICLONE, src.as_raw_fd()) };
    if reflinked == 0 {
        return Ok(CloneMethod::Reflink);
    }
    match Errno::last() {
        // Not supported here, or not between these two files: copy instead.
        Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS => {}
        other => return Err(other.into()),
    }
    let size = src.metadata()?.len();
    dest.set_len(size)?;
    let mut in_kernel = true;
    for_each_data_region(src, size, |start, end| {
        if in_kernel {
            match copy_in_kernel(src, dest, start, end) {
                Ok(()) => return Ok(()),
                Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => in_kernel = false,
                Err(e) => return Err(e.into()),
            }
        }
        copy_through_buffer(src, dest, start, end)
    })?;
    Ok(CloneMethod::SparseCopy)
}

/// `copy_file_range` of `start..end`, at the same offsets.
fn copy_in_kernel(src: &File, dest: &File, start: u64, end: u64) -> Result<(), Errno> {
    let mut off_in = start as i64;
    let mut off_out = start as i64;
    while (off_in as u64) < end {
        let len = (end - off_in as u64).min(1 << 30) as usize;
        let copied =
            nix::fcntl::copy_file_range(src.as_fd(), Some(&mut off_in), dest.as_fd(), Some(&mut off_out), len)?;
        if copied == 0 {
            // The source shrank under us: what is left reads as a hole.
            break;
        }
    }
    Ok(())
}

/// The last resort: `start..end` read and written in user space.
fn copy_through_buffer(src: &File, dest: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = start;
    while offset < end {
        let len = (end - offset).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..len], offset)?;
        dest.write_all_at(&buf[..len], offset)?;
        offset += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    /// A 64 MiB file with data at 1 MiB, 10-12 MiB (mixed) and a short tail
    /// at its very end; the rest holes.
    fn sparse_source(path: &Path) -> File {
        let file = File::create_new(path).unwrap();
        file.set_len(64 * MIB + 123).unwrap();
        file.write_all_at(&[0xa5; 4096], MIB).unwrap();
        let mixed: Vec<u8> = (0..2 * MIB).map(|i| (i * 7 % 251) as u8).collect();
        file.write_all_at(&mixed, 10 * MIB).unwrap();
        file.write_all_at(b"tail", 64 * MIB + 119).unwrap();
        file.sync_all().unwrap();
        file
    }

    /// A temporary directory holding the sparse source `image`.
    fn source_in_tempdir() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("image");
        let file = sparse_source(&src);
        (dir, src, file)
    }

    fn contents(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn assert_same_sparse_copy(src: &Path, dest: &Path) {
        assert_eq!(contents(src), contents(dest), "the copy differs");
        let (a, b) = (std::fs::metadata(src).unwrap(), std::fs::metadata(dest).unwrap());
        assert_eq!(a.len(), b.len());
        // Holes stay holes: the copy allocates about what the source does
        // (a reflink may allocate nothing of its own), never the 64 MiB.
        assert!(
            b.blocks() <= a.blocks() + 64,
            "source {} blocks, copy {}",
            a.blocks(),
            b.blocks()
        );
        assert!(
            b.blocks() * 512 < 8 * MIB,
            "the holes were filled: {} blocks",
            b.blocks()
        );
    }

    #[test]
    fn a_sparse_file_clones_byte_identical_with_its_holes() {
        // On this file system, whatever it is (the test prints which path ran).
        let (dir, src, _) = source_in_tempdir();
        let dest = dir.path().join("disk");
        let method = clone_file(&src, &dest).unwrap();
        eprintln!("clone on {}: {}", dir.path().display(), method.as_str());
        assert_same_sparse_copy(&src, &dest);
        // The copy is independent of its source.
        File::options()
            .write(true)
            .open(&dest)
            .unwrap()
            .write_all_at(b"x", 0)
            .unwrap();
        assert_eq!(contents(&src)[0], 0);
    }

    #[test]
    fn the_fallback_copies_data_extents_only() {
        // A reflink is never possible into a file on another file system
        // (or on ext4/tmpfs at all): /dev/shm is tmpfs.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let (_dir, src, source) = source_in_tempdir();
        let dest = shm.path().join("disk");
        let target = File::create_new(&dest).unwrap();
        assert_eq!(clone_into(&source, &target).unwrap(), CloneMethod::SparseCopy);
        assert_same_sparse_copy(&src, &dest);

        // The user-space path too, with the same result.
        let slow = shm.path().join("slow");
        let target = File::create_new(&slow).unwrap();
        target.set_len(source.metadata().unwrap().len()).unwrap();
        for_each_data_region(&source, source.metadata().unwrap().len(), |s, e| {
            copy_through_buffer(&source, &target, s, e)
        })
        .unwrap();
        assert_same_sparse_copy(&src, &slow);
    }

    #[test]
    fn an_existing_destination_is_refused_and_left_alone() {
        let (dir, src, _) = source_in_tempdir();
        let dest = dir.path().join("disk");
        std::fs::write(&dest, b"mine").unwrap();
        assert_eq!(
            clone_file(&src, &dest).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(contents(&dest), b"mine");
    }
}
