//! Streaming an artefact's original bytes, in order, into a pipe (a
//! hypervisor's incoming migration): the restore path that needs no
//! scratch file. The stored bytes are read once, hashed as they go through
//! zstd, and the gaps of the sparse container are written as zeros, since
//! a stream has no holes.
//!
//! The reader sees the bytes before they are verified: what it loaded may
//! be used only once [`stream_to`] has returned `Ok` (QEMU keeps the guest
//! paused until then).

use std::fs::File;
use std::io::{self, Write};

use super::unpack::{decode_verified, read_checked_header, read_extents, CHUNK};
use super::{blocking, ArtefactInfo, ObjectReader, SnapshotError};

/// What the errors call the destination.
const SINK: &str = "the hypervisor's incoming state stream";

/// Writes the original file of the artefact read from `source` to `sink`,
/// then closes `sink` (the reader sees the end). The artefact is checked
/// against `expected` (size and SHA-256) as [`super::unpack_from`] checks
/// it; a mismatch or a damaged stream is [`SnapshotError::Corrupt`], even
/// when the damage is found only after everything was written.
pub async fn stream_to(source: ObjectReader, expected: &ArtefactInfo, sink: File) -> Result<(), SnapshotError> {
    let expected = expected.clone();
    blocking(move || stream_blocking(source, &expected, sink)).await
}

fn stream_blocking(source: ObjectReader, expected: &ArtefactInfo, sink: File) -> Result<(), SnapshotError> {
    let mut out = io::BufWriter::with_capacity(CHUNK, sink);
    decode_verified(source, expected, |stream| {
        let size = read_checked_header(stream, expected)?;
        let mut written = 0u64;
        read_extents(stream, size, &expected.name, |offset, chunk| {
            write_zeros(&mut out, offset - written)?;
            out.write_all(chunk)?;
            written = offset + chunk.len() as u64;
            Ok(())
        })
        .map_err(|e| e.into_snapshot_error(SINK))?;
        write_zeros(&mut out, size - written)
            .and_then(|()| out.flush())
            .map_err(|e| SnapshotError::io(format!("writing {SINK}"), e))
    })
}

fn write_zeros(out: &mut impl Write, mut count: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while count > 0 {
        let n = count.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..n])?;
        count -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::snapshot::{pack, Compression};

    /// Packs `data` and streams it back through a pipe, as a restore does.
    async fn round_trip(
        data: &[u8],
        damage: impl FnOnce(&mut Vec<u8>, &mut ArtefactInfo),
    ) -> (Result<(), SnapshotError>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (plain, packed) = (dir.path().join("state"), dir.path().join("state.zst"));
        std::fs::write(&plain, data).unwrap();
        let mut info = pack(&plain, &packed, Compression::default()).await.unwrap();
        let mut bytes = std::fs::read(&packed).unwrap();
        damage(&mut bytes, &mut info);
        std::fs::write(&packed, &bytes).unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let reading = std::thread::spawn(move || {
            let mut received = Vec::new();
            File::from(reader).read_to_end(&mut received).unwrap();
            received
        });
        let source: ObjectReader = Box::new(File::open(&packed).unwrap());
        let result = stream_to(source, &info, File::from(writer)).await;
        (result, reading.join().unwrap())
    }

    fn sample() -> Vec<u8> {
        // Zero runs inside and at the end, as a migration stream may have.
        let mut data = vec![7u8; 300_000];
        data.extend(vec![0u8; 3 * CHUNK + 123]);
        data.extend((0..=255u8).cycle().take(2 * CHUNK + 5));
        data.extend(vec![0u8; 9000]);
        data
    }

    #[tokio::test]
    async fn the_reader_gets_the_original_bytes_zeros_included() {
        let data = sample();
        let (result, received) = round_trip(&data, |_, _| {}).await;
        result.unwrap();
        assert_eq!(received.len(), data.len());
        assert!(received == data, "the streamed bytes differ from the original");
    }

    #[tokio::test]
    async fn a_flipped_byte_is_corrupt() {
        let (result, _) = round_trip(&sample(), |bytes, _| {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
        })
        .await;
        assert!(matches!(result, Err(SnapshotError::Corrupt { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_digest_mismatch_found_after_the_last_byte_is_corrupt() {
        // A stream zstd decodes in full, whose record says otherwise: only
        // the digest can tell, after the reader got every byte.
        let (result, received) = round_trip(&sample(), |_, info| info.sha256 = "00".repeat(32)).await;
        assert_eq!(received.len(), sample().len());
        assert!(matches!(result, Err(SnapshotError::Corrupt { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_is_a_write_error_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, packed) = (dir.path().join("state"), dir.path().join("state.zst"));
        std::fs::write(&plain, sample()).unwrap();
        let info = pack(&plain, &packed, Compression::default()).await.unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let source: ObjectReader = Box::new(File::open(&packed).unwrap());
        let result = stream_to(source, &info, File::from(writer)).await;
        assert!(matches!(result, Err(SnapshotError::Io { .. })), "{result:?}");
    }
}
