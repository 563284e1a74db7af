//! Logs that another process appends to (a VMM's serial console), kept
//! bounded on disk and read from the end.
//!
//! The writer (QEMU's `logappend=on` chardev log, Firecracker's stdout
//! opened for appending) has the file open with `O_APPEND`, so its next
//! write always lands at the current end, whatever was cut meanwhile.
//! Trimming cuts the oldest bytes in place with `FALLOC_FL_COLLAPSE_RANGE`
//! (ext4, xfs: atomic against concurrent appends, nothing lost); where the
//! filesystem cannot collapse (tmpfs, overlayfs), the newest bytes are read
//! and the file is rewritten, which can lose what the writer appended in
//! that instant.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The last `max_bytes` of the file (fewer if it is shorter); reads only
/// those bytes. A missing file reads as empty.
pub fn read_tail(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut out = Vec::with_capacity((len - start) as usize);
    file.take(max_bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// The bytes from `offset` to the end, at most `max_bytes` (for following
/// a log as it grows).
pub fn read_from(path: &Path, offset: u64, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    file.take(max_bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// When the file is larger than `cap`, cuts its oldest bytes so that about
/// `keep` (≤ `cap`) newest bytes remain. Returns how many bytes were cut.
pub fn trim(path: &Path, cap: u64, keep: u64) -> io::Result<u64> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let meta = file.metadata()?;
    let len = meta.len();
    if len <= cap {
        return Ok(0);
    }
    let keep = keep.min(cap);
    // Collapsing works in whole filesystem blocks: cut a little less, so
    // at least `keep` bytes stay.
    let block = meta.blksize().max(1);
    let cut = (len - keep) / block * block;
    if cut > 0 && collapse(&file, cut).is_ok() {
        return Ok(cut);
    }
    rewrite_with_tail(path, file, len, keep)
}

fn collapse(file: &File, len: u64) -> nix::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
        0,
        len as nix::libc::off_t,
    )
}

fn rewrite_with_tail(path: &Path, file: File, len: u64, keep: u64) -> io::Result<u64> {
    let tail = read_tail(path, keep)?;
    file.set_len(0)?;
    // Appending: the VMM's own appends and this one share the end.
    let mut appender = OpenOptions::new().append(true).open(path)?;
    appender.write_all(&tail)?;
    Ok(len - tail.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    #[test]
    fn the_tail_is_read_from_the_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        assert!(read_tail(&path, 10).unwrap().is_empty());
        write(&path, b"0123456789abcdef");
        assert_eq!(read_tail(&path, 4).unwrap(), b"cdef");
        assert_eq!(read_tail(&path, 100).unwrap(), b"0123456789abcdef");
        assert_eq!(read_from(&path, 10, 3).unwrap(), b"abc");
    }

    #[test]
    fn trimming_keeps_the_newest_bytes_and_later_appends_follow_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        // A writer holding the file open for appending, like a VMM.
        let mut writer = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data).unwrap();
        assert_eq!(trim(&path, 300_000, 50_000).unwrap(), 0, "under the cap: untouched");
        let cut = trim(&path, 100_000, 50_000).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!((50_000..=100_000).contains(&len), "{len} bytes after cutting {cut}");
        let kept = std::fs::read(&path).unwrap();
        assert_eq!(kept[..], data[data.len() - kept.len()..], "the newest bytes, in order");
        writer.write_all(b"after").unwrap();
        let all = std::fs::read(&path).unwrap();
        assert!(all.ends_with(b"after"));
        assert_eq!(all.len() as u64, len + 5, "the writer's append lands at the new end");
    }
}
