//! The sparse container inside an artefact's zstd stream.
//!
//! ```text
//! header:  b"HATCHSPR" | version: u32 LE (1) | logical size: u64 LE
//! extent:  offset: u64 LE | length: u64 LE | `length` bytes of data
//! ...      (extents in increasing offset order, not overlapping)
//! end:     offset = u64::MAX | length = 0
//! ```
//! Everything not covered by an extent reads as zeros.
//!
//! A disk diff (`disk-diff.zst`) is the same container with its own
//! header, and everything not covered by an extent reads as the base's
//! bytes (zeros past the base's end):
//!
//! ```text
//! header:  b"HATCHDIF" | version: u32 LE (1) | logical size: u64 LE
//!          | base size: u64 LE | base digest: 32 bytes (see `disk_diff`)
//! ```

use std::io::{self, Read, Write};

use crate::sys::sparse::is_zero;

pub(crate) const MAGIC: &[u8; 8] = b"HATCHSPR";
pub(crate) const VERSION: u32 = 1;
const END_OFFSET: u64 = u64::MAX;
/// Granularity of zero detection: the usual filesystem block size.
pub(crate) const BLOCK: usize = 4096;

pub(crate) fn write_header(out: &mut impl Write, logical_size: u64) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&logical_size.to_le_bytes())
}

pub(crate) const DIFF_MAGIC: &[u8; 8] = b"HATCHDIF";

/// What a diff's header says of itself and of its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiffHeader {
    pub size: u64,
    pub base_size: u64,
    pub base_digest: [u8; 32],
}

pub(crate) fn write_diff_header(out: &mut impl Write, header: &DiffHeader) -> io::Result<()> {
    out.write_all(DIFF_MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&header.size.to_le_bytes())?;
    out.write_all(&header.base_size.to_le_bytes())?;
    out.write_all(&header.base_digest)
}

pub(crate) fn read_diff_header(input: &mut (impl Read + ?Sized)) -> Result<DiffHeader, FormatError> {
    let size = read_magic_and_size(input, DIFF_MAGIC)?;
    Ok(DiffHeader {
        size,
        base_size: u64::from_le_bytes(read_array(input)?),
        base_digest: read_array(input)?,
    })
}

pub(crate) fn write_extent(out: &mut impl Write, offset: u64, data: &[u8]) -> io::Result<()> {
    out.write_all(&offset.to_le_bytes())?;
    out.write_all(&(data.len() as u64).to_le_bytes())?;
    out.write_all(data)
}

pub(crate) fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&END_OFFSET.to_le_bytes())?;
    out.write_all(&0u64.to_le_bytes())
}

/// The container is malformed (as opposed to the stream failing to read).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("not a Hatch sparse container or disk diff of the expected kind (bad magic)")]
    BadMagic,
    #[error("unsupported container version {0}")]
    Version(u32),
    #[error("extent at {offset} (+{length}) is out of order or beyond the size {size}")]
    BadExtent { offset: u64, length: u64, size: u64 },
    #[error("reading the container: {0}")]
    Read(#[from] io::Error),
}

/// Reads the header; returns the logical size.
pub(crate) fn read_header(input: &mut (impl Read + ?Sized)) -> Result<u64, FormatError> {
    read_magic_and_size(input, MAGIC)
}

fn read_magic_and_size(input: &mut (impl Read + ?Sized), expected: &[u8; 8]) -> Result<u64, FormatError> {
    let magic: [u8; 8] = read_array(input)?;
    if &magic != expected {
        return Err(FormatError::BadMagic);
    }
    let version = u32::from_le_bytes(read_array(input)?);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    Ok(u64::from_le_bytes(read_array(input)?))
}

/// Reads the next extent header, checked against the previous extent's end
/// and the logical size; `None` at the end marker.
pub(crate) fn read_extent(
    input: &mut (impl Read + ?Sized),
    min_offset: u64,
    size: u64,
) -> Result<Option<(u64, u64)>, FormatError> {
    let offset = u64::from_le_bytes(read_array(input)?);
    let length = u64::from_le_bytes(read_array(input)?);
    if offset == END_OFFSET && length == 0 {
        return Ok(None);
    }
    let in_bounds = offset >= min_offset && offset.checked_add(length).is_some_and(|end| end <= size);
    if !in_bounds {
        return Err(FormatError::BadExtent { offset, length, size });
    }
    Ok(Some((offset, length)))
}

fn read_array<const N: usize>(input: &mut (impl Read + ?Sized)) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The runs of non-zero `BLOCK`-sized blocks in `buf`, as (start, end)
/// byte ranges; a short last block counts as a block.
pub(crate) fn nonzero_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut run_start: Option<usize> = None;
    for (index, block) in buf.chunks(BLOCK).enumerate() {
        let start = index * BLOCK;
        match (is_zero(block), run_start) {
            (false, None) => run_start = Some(start),
            (true, Some(begin)) => {
                runs.push((begin, start));
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(begin) = run_start {
        runs.push((begin, buf.len()));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_skip_zero_blocks_and_keep_partial_tail() {
        let mut buf = vec![0u8; BLOCK * 5 + 10];
        buf[BLOCK + 7] = 1; // block 1
        buf[BLOCK * 2] = 1; // block 2, same run
        buf[BLOCK * 5 + 9] = 1; // short tail
        assert_eq!(nonzero_runs(&buf), [(BLOCK, BLOCK * 3), (BLOCK * 5, BLOCK * 5 + 10)]);
        assert!(nonzero_runs(&vec![0u8; BLOCK * 3]).is_empty());
    }

    #[test]
    fn container_round_trips_and_rejects_bad_extents() {
        let mut out = Vec::new();
        write_header(&mut out, 100).unwrap();
        write_extent(&mut out, 10, b"abc").unwrap();
        write_end(&mut out).unwrap();
        let mut input = out.as_slice();
        assert_eq!(read_header(&mut input).unwrap(), 100);
        assert_eq!(read_extent(&mut input, 0, 100).unwrap(), Some((10, 3)));
        let mut data = [0u8; 3];
        input.read_exact(&mut data).unwrap();
        assert_eq!(read_extent(&mut input, 13, 100).unwrap(), None);

        let mut bad = Vec::new();
        write_extent(&mut bad, 98, b"abc").unwrap();
        assert!(matches!(
            read_extent(&mut bad.as_slice(), 0, 100),
            Err(FormatError::BadExtent { .. })
        ));
        let mut overlap = Vec::new();
        write_extent(&mut overlap, 5, b"a").unwrap();
        assert!(matches!(
            read_extent(&mut overlap.as_slice(), 6, 100),
            Err(FormatError::BadExtent { .. })
        ));
        assert!(matches!(
            read_header(&mut &b"NOTHATCH\x01\0\0\0"[..]),
            Err(FormatError::BadMagic)
        ));
    }
}
