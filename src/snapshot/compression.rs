//! How artefacts are compressed: zstd at a level HATCH_SNAPSHOT_ZSTD_LEVEL
//! sets, on one worker thread per CPU (zstd's multi-threaded mode splits
//! the input into jobs compressed in parallel and still writes one
//! ordinary zstd frame, so unpacking is unchanged).
//!
//! The default level was chosen by measurement (docs/benchmarks.md, "zstd
//! level"): the pass runs in the background, competing with the guests for
//! the host's CPUs, and a higher level costs CPU time for every byte of
//! every snapshot while saving little space on guest memory.

use std::io::{self, Write};
use std::ops::RangeInclusive;

/// A zstd level and how many threads compress at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// zstd level, within [`Compression::LEVELS`].
    pub level: i32,
    /// Worker threads; 0 compresses on the calling thread alone (zstd's
    /// single-threaded mode).
    pub workers: u32,
}

impl Compression {
    /// HATCH_SNAPSHOT_ZSTD_LEVEL's default.
    pub const DEFAULT_LEVEL: i32 = 3;
    /// The levels HATCH_SNAPSHOT_ZSTD_LEVEL accepts: zstd's ordinary ones
    /// (20 and up need much more memory to compress and to unpack).
    pub const LEVELS: RangeInclusive<i32> = 1..=19;

    /// `level` on one worker per available CPU (at least one).
    pub fn at_level(level: i32) -> Compression {
        Compression {
            level,
            workers: all_cpus(),
        }
    }

    /// A zstd encoder writing into `out`, with zstd's content checksum.
    pub(super) fn encoder<W: Write>(&self, out: W) -> io::Result<zstd::Encoder<'static, W>> {
        let mut encoder = zstd::Encoder::new(out, self.level)?;
        if self.workers > 0 {
            encoder.multithread(self.workers)?;
        }
        encoder.include_checksum(true)?;
        Ok(encoder)
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::at_level(Compression::DEFAULT_LEVEL)
    }
}

/// The CPUs this process may use (its affinity and cgroup quota), at least 1.
pub fn all_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{pack, unpack, SnapshotError};

    /// Compressible and incompressible stretches, larger than several of
    /// zstd's multi-threaded jobs (8 MiB each at level 3).
    fn sample() -> Vec<u8> {
        let mut data = Vec::with_capacity(24 << 20);
        while data.len() < 24 << 20 {
            data.extend_from_slice(&rand::random::<[u8; 8]>());
            data.extend_from_slice(b"guest page cache text, repeated");
        }
        data
    }

    #[tokio::test]
    async fn a_multithreaded_artefact_round_trips_and_a_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (src, packed, restored) = (
            dir.path().join("memory"),
            dir.path().join("memory.zst"),
            dir.path().join("restored"),
        );
        let data = sample();
        std::fs::write(&src, &data).unwrap();
        let threaded = Compression { level: 3, workers: 2 };
        let info = pack(&src, &packed, threaded).await.unwrap();
        let stored = std::fs::read(&packed).unwrap();
        assert_eq!(info.compressed_bytes, stored.len() as u64);
        assert_eq!(
            info.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))
        );

        unpack(&packed, &info, &restored).await.unwrap();
        assert!(
            std::fs::read(&restored).unwrap() == data,
            "bytes differ after the round trip"
        );

        std::fs::remove_file(&restored).unwrap();
        let mut damaged = stored;
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        std::fs::write(&packed, &damaged).unwrap();
        match unpack(&packed, &info, &restored).await {
            Err(SnapshotError::Corrupt { artefact, reason }) => {
                assert_eq!(artefact, "memory.zst");
                assert!(reason.contains("SHA-256"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(!restored.exists(), "nothing is restored from a damaged artefact");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["memory", "memory.zst"], "no temporaries left");
    }

    #[test]
    fn every_level_and_thread_count_makes_an_encoder() {
        for level in [*Compression::LEVELS.start(), *Compression::LEVELS.end()] {
            for workers in [0, 1, all_cpus()] {
                let mut encoder = Compression { level, workers }.encoder(Vec::new()).unwrap();
                encoder.write_all(b"x").unwrap();
                let out = encoder.finish().unwrap();
                assert_eq!(zstd::decode_all(&out[..]).unwrap(), b"x");
            }
        }
    }
}
