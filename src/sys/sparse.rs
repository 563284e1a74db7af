//! Where a sparse file keeps its data: SEEK_DATA/SEEK_HOLE, so readers of
//! disks and memory files touch only the extents that exist.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// Calls `visit(start, end)` for each data region of `file` below `size`,
/// in order, skipping holes. Filesystems without SEEK_DATA report the
/// whole file as one region.
pub fn for_each_data_region(
    file: &File,
    size: u64,
    mut visit: impl FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let mut pos = 0u64;
    while pos < size {
        let start = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(start) => start as u64,
            Err(Errno::ENXIO) => break, // only a hole from here to the end
            Err(Errno::EINVAL) => pos,  // no hole support: all data
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match lseek(fd, start as i64, Whence::SeekHole) {
            Ok(end) => (end as u64).min(size),
            Err(Errno::EINVAL | Errno::ENXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end > start {
            visit(start, end)?;
        }
        pos = end.max(start + 1);
    }
    Ok(())
}

/// The data regions of `file` below `size`, as (start, end) byte ranges.
pub fn data_regions(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut regions = Vec::new();
    for_each_data_region(file, size, |start, end| {
        regions.push((start, end));
        Ok(())
    })?;
    Ok(regions)
}

/// Whether every byte of `block` is zero.
pub fn is_zero(block: &[u8]) -> bool {
    // A fold (not `all`) so the compiler can vectorise it.
    block.iter().fold(0u8, |acc, b| acc | b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn regions_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create_new(dir.path().join("sparse")).unwrap();
        file.set_len(4 << 20).unwrap();
        file.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        let regions = data_regions(&file, 4 << 20).unwrap();
        let covered: u64 = regions.iter().map(|(s, e)| e - s).sum();
        assert!(
            regions.iter().any(|&(s, e)| s <= 1 << 20 && e >= (1 << 20) + 4096),
            "{regions:?}"
        );
        // tmpfs and ext4 both report holes; a filesystem that does not would cover it all.
        assert!(covered < 4 << 20 || regions == [(0, 4 << 20)], "{regions:?}");
    }
}
